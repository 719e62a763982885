"""The model card carries the evaluation: one section, replaced when the model is evaluated again."""

from __future__ import annotations

from gecko_factory.train.card import EVAL_HEADING, add_eval_to_model_card


def test_eval_section_is_added_then_replaced(tmp_path):
    (tmp_path / "README.md").write_text("# model\n\n## Data lineage\n\n| run | shards |\n")
    add_eval_to_model_card(tmp_path, "| dim | nDCG@10 |\n|---|---|\n| 384 | 0.6451 |")
    add_eval_to_model_card(tmp_path, "| dim | nDCG@10 |\n|---|---|\n| 384 | 0.6612 |")
    card = (tmp_path / "README.md").read_text()
    assert card.count(EVAL_HEADING) == 1
    assert "0.6612" in card and "0.6451" not in card
    assert card.startswith("# model\n\n## Data lineage") and not (tmp_path / "README.md.tmp").exists()
