"""fastbase.text: tokenizing, vocabularies, text data, the AWD-LSTM and ULMFiT's learners, on tiny
corpora built here (a few hundred words, models of 8-16 units, one epoch)."""
import json
import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("spacy", reason="fastbase.text tokenizes with spaCy (the text extra)")
pd = pytest.importorskip("pandas", reason="text tables are read with pandas (the text extra)")

from fastbase.core import defaults
from fastbase.data import LabelError, load_data
from fastbase.learner import load_learner
from fastbase.metrics import accuracy
from fastbase.text import (
    AWD_LSTM,
    BOS,
    TK_MAJ,
    TK_UP,
    UNK,
    LanguageLearner,
    Perplexity,
    RNNLearner,
    TextClasDataBunch,
    TextClassificationInterpretation,
    TextError,
    TextList,
    TextLMDataBunch,
    TokenIds,
    Tokenizer,
    Vocab,
    WeightDropout,
    awd_lstm_clas_config,
    awd_lstm_lm_config,
    deal_caps,
    fix_html,
    get_language_model,
    language_model_learner,
    pad_collate,
    replace_all_caps,
    replace_rep,
    replace_wrep,
    text_classifier_learner,
    write_itos,
)

LM_CONFIG = {**awd_lstm_lm_config, "emb_sz": 8, "n_hid": 16, "n_layers": 2}
CLAS_CONFIG = {**awd_lstm_clas_config, "emb_sz": 8, "n_hid": 16, "n_layers": 2}
GOOD, BAD = ["good", "great", "fine", "lovely"], ["bad", "awful", "poor", "dull"]


def reviews(n=48, seed=0):
    """Short reviews whose class shows in their words: something a tiny classifier can learn."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.choice(GOOD if label == "pos" else BAD, size=int(rng.integers(3, 12)))
        rows.append({"label": label, "text": f"This film was {' '.join(words)} . The End !", "is_valid": i >= n - 12})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(n_cpus=1)


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("lm")
    df = reviews()
    return (TextList.from_df(df, path, cols="text", tokenizer=tok).split_from_df("is_valid").label_for_lm()
            .databunch(bs=4, bptt=8, min_freq=1, device="cpu", seed=0))


@pytest.fixture(scope="module")
def clas_data(lm_data, tok):
    return (TextList.from_df(reviews(), lm_data.path, cols="text", vocab=lm_data.vocab, tokenizer=tok)
            .split_from_df("is_valid").label_from_df("label").databunch(bs=8, device="cpu", seed=0))


# --- rules and tokens ------------------------------------------------------------------------
def test_rules_mark_capitals_and_repetitions():
    assert deal_caps(["The", "cat", "ok"]) == [TK_MAJ, "the", "cat", "ok"]
    assert replace_all_caps(["WOW", "a", "I"]) == [TK_UP, "wow", "a", "I"]
    assert "xxrep 6 o" in replace_rep("cooooool")
    assert replace_wrep("it is very very very very good").split()[2:5] == ["xxwrep", "4", "very"]
    assert fix_html("a<br />b &amp; c @-@ d") == "a\nb & c-d"


def test_tokenizer_applies_the_rules_and_keeps_special_tokens_whole(tok):
    tokens = tok.process_text(f"{BOS} The MOVIE isn't good")
    assert tokens == [BOS, TK_MAJ, "the", TK_UP, "movie", "is", "n't", "good"]


def test_tokenizer_gives_the_same_tokens_in_worker_processes():
    texts = [f"Text number {i}, with SOME words." for i in range(9)]
    assert Tokenizer(n_cpus=2).process_all(texts, chunk=3, min_chunk=1) == Tokenizer(n_cpus=1).process_all(texts)


def test_vocab_puts_special_tokens_first_and_pads_to_a_multiple_of_8(tmp_path):
    vocab = Vocab.create([["a", "b", "a", "c"], ["a", "b"]], max_vocab=100, min_freq=2)
    assert vocab.itos[:2] == [UNK, "xxpad"] and vocab.itos[9:11] == ["a", "b"] and len(vocab) % 8 == 0
    assert vocab.numericalize(["a", "zzz"]) == [9, 0] and vocab.textify([9, 10]) == "a b"
    assert Vocab.load(vocab.save(tmp_path / "itos.json")) == vocab


def test_vocab_errors_are_clear():
    with pytest.raises(TextError, match="at least two tokens"):
        Vocab(["xxunk"])
    with pytest.raises(TextError, match="min_freq=3"):
        Vocab.create([["a", "b"]], min_freq=3)


def test_token_ids_store_documents_in_one_int32_array():
    docs = TokenIds.from_lists([[1, 2, 3], [4], [5, 6]])
    assert docs.ids.dtype == np.int32 and docs.ids.tolist() == [1, 2, 3, 4, 5, 6]
    assert docs[2].tolist() == [5, 6] and docs[[2, 0]].ids.tolist() == [5, 6, 1, 2, 3]
    assert docs.concat([1, 0]).tolist() == [4, 1, 2, 3]


# --- data ----------------------------------------------------------------------------------------
def test_lm_batches_are_contiguous_streams_shifted_by_one(lm_data):
    ds = lm_data.valid_ds
    batches = list(lm_data.valid_dl)
    x = torch.cat([b[0] for b in batches], 1)
    y = torch.cat([b[1] for b in batches], 1)
    stream = torch.from_numpy(ds.docs.concat())
    assert x.shape[0] == 4 and torch.equal(x[1], stream[ds.stream_len:2 * ds.stream_len])
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert lm_data.valid_ds[0][0].text.startswith(BOS)


def test_lm_training_windows_vary_and_cover_the_streams(lm_data):
    lengths = [b[0].shape[1] for b in lm_data.train_dl]
    assert sum(lengths) == lm_data.train_ds.stream_len and len(lengths) == len(lm_data.train_dl)
    assert set(lengths[:-1]) == {8}  # short windows (lesson 7's bptt=3) are cut exactly by default
    first = next(iter(lm_data.train_dl))[0]
    assert not all(torch.equal(first, next(iter(lm_data.train_dl))[0]) for _ in range(3))  # shuffled per epoch
    varied = TextLMDataBunch.from_label_lists(lm_data.label_lists, lm_data.path, bs=4, bptt=8, random_bptt=True,
                                              device="cpu", seed=0)
    lengths = [b[0].shape[1] for b in varied.train_dl]
    assert sum(lengths) == varied.train_ds.stream_len and len(set(lengths)) > 1


def test_classifier_batches_pad_first_and_validation_is_longest_first(clas_data):
    x, _ = next(iter(clas_data.valid_dl))
    pad = clas_data.vocab.pad_idx
    assert (x[:, -1] != pad).all() and (x[-1, 0] == pad or len({int((r != pad).sum()) for r in x}) == 1)
    lengths = clas_data.valid_ds.lengths
    assert (np.diff(lengths) <= 0).all()
    assert pad_collate([(np.array([5, 6]), 0), (np.array([7]), 1)], pad_idx=1)[0].tolist() == [[5, 6], [1, 7]]
    text, label = clas_data.train_ds[0]
    assert text.text.startswith(BOS) and str(label) in ("pos", "neg")


def test_text_databunch_factories_and_plain_save(tmp_path, tok):
    df = reviews()
    df.to_csv(tmp_path / "texts.csv", index=False)
    data = TextClasDataBunch.from_csv(tmp_path, "texts.csv", text_cols="text", label_cols="label", tokenizer=tok,
                                      bs=8, min_freq=1, device="cpu", seed=1)
    assert data.classes == ["neg", "pos"] and len(data.valid_ds) == 9
    data.save("data_clas.pkl")
    assert json.loads((tmp_path / "data_clas.pkl").read_text())["vocab"] == data.vocab.itos
    again = load_data(tmp_path, "data_clas.pkl", bs=4)
    assert isinstance(again, TextClasDataBunch) and again.vocab == data.vocab
    assert again.train_ds.docs.ids.tolist() == data.train_ds.docs.ids.tolist()
    lm = TextLMDataBunch.from_ids(tmp_path, data.vocab, [[2, 9, 10, 11] * 5] * 4, [[2, 9, 10] * 4] * 2, bs=2,
                                  device="cpu")
    assert lm.one_batch()[0].shape[0] == 2 and lm.c == len(data.vocab)


def test_bad_text_input_gets_clear_errors(tmp_path, tok):
    with pytest.raises(TextError, match="no text column 'review'"):
        TextList.from_df(reviews(), tmp_path, cols="review")
    empty = pd.DataFrame({"text": ["fine words", "  ", "more words"], "label": ["a", "b", "a"]})
    with pytest.raises(TextError, match="empty document.*document 1"):
        TextList.from_df(empty, tmp_path, cols="text", tokenizer=tok).split_none().label_from_df("label").databunch()
    (tmp_path / "train" / "pos").mkdir(parents=True)
    (tmp_path / "train" / "pos" / "a.txt").write_bytes("caf\xe9 ok".encode("latin-1"))
    with pytest.raises(TextError, match=r"a.txt is not UTF-8 text: byte 3"):
        TextList.from_folder(tmp_path).split_none().label_from_folder().databunch()
    unseen = reviews()
    unseen.loc[unseen.is_valid, "label"] = "meh"
    with pytest.raises(LabelError, match="meh"):
        TextList.from_df(unseen, tmp_path, cols="text").split_from_df("is_valid").label_from_df("label")


# --- models and learners -------------------------------------------------------------------------
def test_weight_dropout_trains_the_raw_weight_and_leaves_the_lstm_alone():
    torch.manual_seed(0)
    wd = WeightDropout(torch.nn.LSTM(4, 4, batch_first=True), weight_p=0.5)
    kept = wd.module.weight_hh_l0.clone()
    out, _ = wd(torch.randn(2, 3, 4))
    out.sum().backward()
    assert wd.weight_hh_l0_raw.grad.abs().sum() > 0 and torch.equal(wd.module.weight_hh_l0, kept)
    assert "weight_hh_l0" not in dict(wd.module.named_parameters())


def test_language_model_ties_its_decoder_and_keeps_fastai_state_keys():
    model = get_language_model(AWD_LSTM, 24, LM_CONFIG)
    assert model[1].decoder.weight is model[0].encoder.weight
    keys = set(model.state_dict())
    assert {"0.encoder.weight", "0.encoder_dp.emb.weight", "0.rnns.0.weight_hh_l0_raw", "1.decoder.bias"} <= keys
    assert model(torch.randint(0, 24, (3, 5))).shape == (3, 5, 24)


def test_ulmfit_end_to_end(lm_data, clas_data, one_thread):
    torch.manual_seed(0)
    defaults.silent = True
    learn = language_model_learner(lm_data, config=LM_CONFIG, pretrained=False, metrics=[accuracy, Perplexity()])
    learn.fit_one_cycle(1, 1e-2)
    loss, _, ppl = learn.recorder.values[-1][1:]
    assert np.isclose(ppl, np.exp(loss), rtol=0.02) and len(learn.layer_groups) == 3  # per token, per batch
    generated = learn.predict("This film was", n_words=4)
    assert generated.startswith("This film was ") and len(generated.split()) == 7
    learn.save_encoder("enc")

    clas = text_classifier_learner(clas_data, config=CLAS_CONFIG, metrics=[accuracy])
    clas.load_encoder("enc")
    assert clas.n_frozen == len(clas.layer_groups) - 1 == 3
    clas.freeze_to(-2)
    assert not any(p.requires_grad for p in clas.layer_groups[1].parameters())
    assert all(p.requires_grad for p in clas.layer_groups[2].parameters())
    clas.fit_one_cycle(1, slice(1e-3, 1e-2))
    label, _, probs = clas.predict("This film was good great lovely .")
    assert str(label) in ("neg", "pos") and probs.shape == (2,)
    interp = TextClassificationInterpretation.from_learner(clas)
    item, weights = interp.intrinsic_attention("This film was good .")
    assert weights.shape == (len(item.text.split(" ")),) and float(weights.max()) == 1.0
    assert interp.html_intrinsic_attention("This film was good .").count("<span") == len(weights)
    top = interp.show_top_losses(3)
    assert list(top.columns) == ["text", "prediction", "actual", "loss", "probability"] and len(top) == 3
    clas.export()
    inference = load_learner(clas.path)
    assert isinstance(inference, RNNLearner) and inference.data.vocab == clas_data.vocab
    assert torch.allclose(inference.predict("This film was good great lovely .")[2], probs, atol=1e-5)


def test_load_encoder_names_the_sizes_that_disagree(lm_data, tmp_path):
    itos = [*lm_data.vocab.itos[:9], *(f"w{i}" for i in range(len(lm_data.vocab) + 7))]
    other = TextClasDataBunch.from_ids(tmp_path, itos, [[2, 9, 10]] * 6, [[2, 11]] * 2, train_lbls=[0, 1] * 3,
                                       valid_lbls=[0, 1], bs=2, device="cpu")
    learn = language_model_learner(lm_data, config=LM_CONFIG, pretrained=False)
    learn.save_encoder("enc_small")
    clas = text_classifier_learner(other, config=CLAS_CONFIG, path=learn.path)
    with pytest.raises(TextError, match=f"vocabulary of {len(lm_data.vocab)} tokens, this model {len(other.vocab)}"):
        clas.load_encoder("enc_small")


def test_pretrained_weights_map_the_vocabulary_and_files_are_read_safely(lm_data, tmp_path):
    old_itos = list(lm_data.vocab.itos[:9]) + ["film", "zebra"]
    source = get_language_model(AWD_LSTM, len(old_itos), LM_CONFIG)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    write_itos(old_itos, tmp_path / "itos.pkl")
    learn = language_model_learner(lm_data, config=LM_CONFIG, pretrained_fnames=(tmp_path / "w.pth",
                                                                                tmp_path / "itos.pkl"))
    emb, old = learn.model[0].encoder.weight.detach(), source[0].encoder.weight.detach()
    film, unseen = lm_data.vocab.stoi["film"], lm_data.vocab.stoi["lovely"]
    assert torch.allclose(emb[film], old[9]) and torch.allclose(emb[unseen], old.mean(0))
    assert isinstance(learn, LanguageLearner) and learn.n_frozen == len(learn.layer_groups) - 1
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps([print]))
    with pytest.raises(TextError, match="only strings"):
        language_model_learner(lm_data, config=LM_CONFIG, pretrained_fnames=(tmp_path / "w.pth",
                                                                            tmp_path / "evil.pkl"))


def test_pretrained_without_network_names_the_url_and_the_ways_out(lm_data, monkeypatch):
    monkeypatch.setenv("FASTBASE_OFFLINE", "1")
    with pytest.raises(TextError, match=r"WT103_FWD.*pretrained=False.*pretrained_fnames"):
        language_model_learner(lm_data, config=LM_CONFIG)


def test_the_notebook_namespace_gives_the_lessons_names():
    import fastbase.text as namespace
    ns = {name: getattr(namespace, name) for name in namespace.__all__}  # what `import *` binds
    lesson = {"TextList", "TextLMDataBunch", "TextClasDataBunch", "language_model_learner", "text_classifier_learner",
              "AWD_LSTM", "ItemLists", "DatasetType", "untar_data", "URLs", "load_data", "Learner", "accuracy",
              "BatchNorm1dFlat", "F", "nn", "torch", "np", "TextClassificationInterpretation"}
    assert lesson <= set(ns), lesson - set(ns)


class StatefulGRU(torch.nn.Module):
    """Lesson 7's Model4: the hidden state carries over from one batch to the next, validation included."""

    def __init__(self, nv, nh=8, bs=4):
        super().__init__()
        self.i_h, self.rnn, self.h_o = torch.nn.Embedding(nv, nh), torch.nn.GRU(nh, nh, batch_first=True), \
            torch.nn.Linear(nh, nv)
        self.h = torch.zeros(1, bs, nh)

    def forward(self, x):
        res, h = self.rnn(self.i_h(x), self.h)
        self.h = h.detach()
        return self.h_o(res)


def test_a_hidden_state_kept_through_validation_can_feed_training(lm_data):
    from fastbase.learner import Learner
    learn = Learner(lm_data, StatefulGRU(len(lm_data.vocab)), metrics=accuracy, silent=True)
    learn.fit(2, 1e-2)  # the second epoch starts from the state validation left
    assert len(learn.recorder.values) == 2 and not learn.model.h.is_inference()


def test_from_folder_labels_by_folder_and_a_language_model_exports(tmp_path, lm_data, tok):
    for split, n in (("train", 4), ("valid", 2)):
        for label, words in (("pos", GOOD), ("neg", BAD)):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(n):
                (tmp_path / split / label / f"{i}.txt").write_text(f"It was {words[i % 4]} and {words[-1]} .")
    data = TextClasDataBunch.from_folder(tmp_path, tokenizer=tok, min_freq=1, bs=4, device="cpu")
    assert data.classes == ["neg", "pos"] and len(data.train_ds) == 8 and len(data.valid_ds) == 4
    learn = language_model_learner(lm_data, config=LM_CONFIG, pretrained=False, path=tmp_path)
    learn.export()
    again = load_learner(tmp_path)
    assert isinstance(again, LanguageLearner) and again.predict("This film", n_words=3).startswith("This film ")


def test_post_rules_applied_per_piece_give_the_tokens_of_the_whole_document(tok):
    texts = ["The BIG dog , the Big DOG !", "  Start\n\nAGAIN Now", "ok"]
    per_document = Tokenizer(n_cpus=1, post_rules=[lambda d: replace_all_caps(d), lambda d: deal_caps(d)])
    assert tok.process_all(texts) == per_document.process_all(texts)
