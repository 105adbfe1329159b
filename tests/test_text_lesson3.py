"""lesson3-imdb's folder cells: the language model over `train`/`test`/`unsup` (`filter_by_folder`) and
the classifier `TextList.from_folder(path, vocab=data_lm.vocab).split_by_folder(valid='test')
.label_from_folder(classes=['neg', 'pos'])`, on an IMDB-layout folder made from a few imdb_sample
reviews, with models of 8-16 units; gradual unfreezing as the lesson does it, and `lr_find` briefly."""
import csv

import numpy as np
import pytest
import torch

pytest.importorskip("spacy", reason="fastbase.text tokenizes with spaCy (the text extra)")

from conftest import shared_path

from fastbase.core import defaults
from fastbase.data import load_data
from fastbase.text import (
    AWD_LSTM,
    TextList,
    Tokenizer,
    awd_lstm_clas_config,
    awd_lstm_lm_config,
    language_model_learner,
    text_classifier_learner,
)

SIZES = {"emb_sz": 8, "n_hid": 16, "n_layers": 2}


@pytest.fixture
def imdb_folder(tmp_path, monkeypatch):
    """IMDB's layout: train/{neg,pos}, test/{neg,pos} and unsup of .txt reviews, plus files that are not reviews."""
    monkeypatch.setattr(defaults, "silent", True)
    with open(shared_path("data", "imdb_sample", "texts.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    wanted = {("False", "negative"): 8, ("False", "positive"): 8, ("True", "negative"): 3, ("True", "positive"): 3}
    for i, row in enumerate(rows):  # the first 8 reviews of each class for train/, 3 for test/
        key = (row["is_valid"], row["label"])
        if wanted.get(key, 0) == 0:
            continue
        wanted[key] -= 1
        folder = tmp_path / ("test" if key[0] == "True" else "train") / ("pos" if key[1] == "positive" else "neg")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}_7.txt").write_text(" ".join(row["text"].split()[:60]))
    assert not any(wanted.values())
    (tmp_path / "unsup").mkdir()
    (tmp_path / "unsup" / "0_0.txt").write_text("A review without a label, read by the language model only.")
    (tmp_path / "imdb.vocab").write_text("the\nand\n")
    (tmp_path / "README").write_text("not a review")
    return tmp_path


def test_lesson3_folder_cells_language_model_then_classifier(imdb_folder):
    path, bs, tok = imdb_folder, 8, Tokenizer(n_cpus=1)  # one spaCy tokenizer for both lists (the lesson makes two)
    data_lm = (TextList.from_folder(path, tokenizer=tok)
               .filter_by_folder(include=['train', 'test', 'unsup'])
               .split_by_rand_pct(0.1, seed=0)
               .label_for_lm()
               .databunch(bs=bs, bptt=10, min_freq=1))
    assert len(data_lm.train_ds) + len(data_lm.valid_ds) == 16 + 6 + 1
    learn = language_model_learner(data_lm, AWD_LSTM, config={**awd_lstm_lm_config, **SIZES}, drop_mult=0.3,
                                   pretrained=False)
    learn.save_encoder('fine_tuned_enc')

    data_clas = (TextList.from_folder(path, vocab=data_lm.vocab, tokenizer=tok)
                 .split_by_folder(valid='test')
                 .label_from_folder(classes=['neg', 'pos'])
                 .databunch(bs=bs))
    assert data_clas.classes == ['neg', 'pos'] and data_clas.vocab.itos == data_lm.vocab.itos
    assert (len(data_clas.train_ds), len(data_clas.valid_ds)) == (16, 6)
    labels = [str(data_clas.valid_ds[i][1]) for i in range(6)]
    assert sorted(labels) == ['neg'] * 3 + ['pos'] * 3
    data_clas.save('data_clas.pkl')
    data_clas = load_data(path, 'data_clas.pkl', bs=bs)
    assert data_clas.classes == ['neg', 'pos'] and len(data_clas.valid_ds) == 6

    learn = text_classifier_learner(data_clas, AWD_LSTM, config={**awd_lstm_clas_config, **SIZES}, drop_mult=0.5)
    learn.load_encoder('fine_tuned_enc')
    assert learn.model[0].module.encoder.weight.requires_grad is False
    learn.lr_find(num_it=6)
    lrs = np.asarray(learn.recorder.lrs)
    assert len(lrs) == 6 and (np.diff(lrs) > 0).all()
    emb = learn.model[0].module.encoder.weight.detach().clone()
    trained = []
    for n in (-2, -3):
        learn.freeze_to(n)
        trained.append(sum(p.requires_grad for p in learn.model.parameters()))
        learn.fit_one_cycle(1, slice(1e-2 / (2.6 ** 4), 1e-2), moms=(0.8, 0.7))
    assert trained[0] < trained[1] and torch.equal(learn.model[0].module.encoder.weight, emb)
    learn.unfreeze()
    learn.fit_one_cycle(1, slice(1e-3 / (2.6 ** 4), 1e-3), moms=(0.8, 0.7))
    assert not torch.equal(learn.model[0].module.encoder.weight, emb)
    category, _, probs = learn.predict("I really loved that movie, it was awesome!")
    assert str(category) in ('neg', 'pos') and probs.shape == (2,) and abs(float(probs.sum()) - 1) < 1e-5
