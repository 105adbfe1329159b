"""fastbase.text.pretrain: pretraining in parts (`stop_after`, then `resume`) gives the model of one
uninterrupted run, in fastai's file layout; on a corpus of a few hundred words and a model of 8-16 units."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("spacy", reason="fastbase.text tokenizes with spaCy (the text extra)")

from fastbase.core import defaults
from fastbase.text import TextError, read_itos
from fastbase.text.pretrain import main, pretrain_lm

TINY = {"epochs": 2, "emb_sz": 8, "n_hid": 16, "n_layers": 1, "bs": 4, "bptt": 10, "min_freq": 1, "lr": 1e-2}


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setattr(defaults, "silent", True)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "park", "while", "birds", "sang"]
    rng = np.random.default_rng(0)
    file = tmp_path / "corpus.txt"
    file.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(30)) + "\n\n")
    return file


def test_pretraining_in_two_parts_gives_the_model_of_one_run(corpus, tmp_path):
    whole = pretrain_lm(corpus, tmp_path / "whole", **TINY)
    first = pretrain_lm(corpus, tmp_path / "parts", stop_after=1, **TINY)
    assert not first["done"] and first["epochs_done"] == 1 and "weights" not in first
    assert not (tmp_path / "parts" / "lm_fwd.pth").exists()
    assert [p["epochs_done"] for p in json.loads((tmp_path / "parts" / "pretrain_log.json").read_text())] == [1]
    second = pretrain_lm(corpus, tmp_path / "parts", resume=True, **TINY)
    assert second["done"] and [p["epochs_done"] for p in second["parts"]] == [1, 2]
    assert second["valid"] == whole["valid"]
    a, b = torch.load(whole["weights"]), torch.load(second["weights"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    itos = read_itos(second["itos"])
    assert len(itos) == second["vocab"] == a["0.encoder.weight"].shape[0] and "cat" in itos
    config = json.loads((tmp_path / "parts" / "lm_fwd.json").read_text())
    assert (config["emb_sz"], config["n_hid"], config["n_layers"]) == (8, 16, 1)


def test_resume_without_a_checkpoint_names_the_file(corpus, tmp_path):
    with pytest.raises(TextError, match=r"pretrain_checkpoint\.pth"):
        main([str(corpus), "--out", str(tmp_path / "none"), "--resume"])
