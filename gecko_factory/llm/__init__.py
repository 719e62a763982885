"""The LLM stage: an OpenAI-compatible client, and the embedded llama.cpp server used by default."""
