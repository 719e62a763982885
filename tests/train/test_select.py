"""Model selection's rule by hand: a dev win must exceed `margin` paired standard errors of the
per-query gain over the best so far; the validation loss stays strict; checkpoints from before
per-query scores fall back to the strict comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gecko_factory.evaluate import paired_gain
from gecko_factory.train.select import Selector, summarize


def test_paired_gain_by_hand():
    gain, se = paired_gain([1.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    # differences 1, 0, 1: mean 2/3, sample sd sqrt(1/3), SE sqrt(1/3) / sqrt(3) = 1/3
    assert gain == pytest.approx(2 / 3) and se == pytest.approx(1 / 3)
    assert paired_gain([0.7, 0.2], [0.6, 0.1]) == pytest.approx((0.1, 0.0))  # every query +0.1
    assert paired_gain([0.5], [0.25]) == (0.25, 0.0)


def _step_scores(better: int, worse: int, n: int = 200, size: float = 0.1) -> list[float]:
    """A step's per-query nDCG@10 against a base of 0.5 everywhere: `better` queries up by
    `size`, `worse` down by it, the rest unchanged."""
    return [0.5 + size] * better + [0.5 - size] * worse + [0.5] * (n - better - worse)


def _selector(tmp_path, margin: float, metric="dev") -> tuple[Selector, dict]:
    history = {"dev_per_query": {0: [0.5] * 200}}
    selector = Selector(metric, tmp_path, "unused", history, margin)
    assert selector.observe(0, 0.5)  # the base is the first best
    return selector, history


def test_a_noise_sized_dev_win_does_not_replace_the_best(tmp_path):
    # 60 queries better, 50 worse: +0.005, i.e. 10 / sqrt(110) = 0.95 paired SE
    noisy = _step_scores(60, 50)
    gain, se = paired_gain(noisy, [0.5] * 200)
    assert gain == pytest.approx(0.005) and gain / se == pytest.approx(0.95, abs=0.01)
    selector, history = _selector(tmp_path, margin=1.0)
    history["dev_per_query"][10] = noisy
    assert not selector.observe(10, float(np.mean(noisy)))
    assert history["best"]["step"] == 0
    # 90 better, 20 worse: 6.7 SE; it replaces the base, and is itself the bar from then on
    clear = _step_scores(90, 20)
    history["dev_per_query"][20] = clear
    assert selector.observe(20, float(np.mean(clear)))
    assert history["best"] == {"step": 20, "value": pytest.approx(0.535)}
    history["dev_per_query"][30] = noisy  # above the base, below step 20
    assert not selector.observe(30, float(np.mean(noisy)))


def test_margin_zero_takes_any_gain_and_a_loss_never(tmp_path):
    selector, history = _selector(tmp_path, margin=0.0)
    history["dev_per_query"][10] = _step_scores(60, 50)
    assert selector.observe(10, 0.505)
    history["dev_per_query"][20] = _step_scores(60, 61)  # below step 10 and the base
    assert not selector.observe(20, 0.4995)
    assert history["best"]["step"] == 10


def test_without_per_query_scores_the_comparison_is_strict(tmp_path):
    """A checkpoint written before per-query scores were kept: means only."""
    selector = Selector("dev", tmp_path, "unused", {}, margin_se=1.0)
    assert selector.observe(0, 0.5) and selector.observe(10, 0.5001)
    assert not selector.observe(20, 0.5001)
    val = Selector("val_loss", tmp_path, "unused", {}, margin_se=1.0)
    assert val.observe(0, 1.0) and val.observe(10, 0.999) and not val.observe(20, 0.999)


def test_summary_reports_the_exported_steps_paired_gain_over_the_base():
    history = {"val": [], "dev": [(0, 0.5), (10, 0.535)], "best": {"step": 10, "value": 0.535},
               "dev_per_query": {0: [0.5] * 200, 10: _step_scores(90, 20)}}
    sel = summarize("dev", history, "toy [train]", 10, margin_se=1.0)
    assert (sel.selected_step, sel.beat_base) == (10, True)
    assert (sel.dev_queries, sel.margin_se) == (200, 1.0)
    d = np.array(_step_scores(90, 20)) - 0.5
    assert sel.dev_gain_se == pytest.approx(d.std(ddof=1) / math.sqrt(200))
    assert sel.margin_text() == " by more than 1 paired SE"
    assert (sel.best_trained_step, sel.dev_best_trained) == (10, 0.535)
    history["best"] = {"step": 0, "value": 0.5}
    history["dev"].append((20, 0.505))
    history["dev_per_query"][20] = _step_scores(60, 50)
    base = summarize("dev", history, "toy [train]", 20, margin_se=1.0)
    assert (base.selected_step, base.beat_base, base.dev_gain_se) == (0, False, 0.0)
    # what training reached, though the base is the export: step 10, the best trained step
    assert (base.best_trained_step, base.dev_best_trained) == (10, 0.535)
    assert base.dev_best_trained_se == pytest.approx(sel.dev_gain_se)
