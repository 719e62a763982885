"""The judge audit: how often the factory's judge picks a labelled document (issue 12).

A labelled retrieval set (BEIR layout) is mined and judged exactly as a FRet shard mines and
judges (same encoder, index, N, prompts, endpoint and request cache), then scored two ways:
as a reranker (precision@1 / MRR of each signal and fusion) and as FRet uses it (wrong
relabels, false negatives). Modules: `data` (the labelled set, its corpus and index), `judging`
(the LLM part: one resumable record per query), `report` (metrics, audit.json, markdown).
The labels only ever reach `report`: mining and judging see the query text and the corpus.
"""
