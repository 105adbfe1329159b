"""`fastbase serve` for a text classifier: POST /predict with JSON {"text": ...} answers the label and
the class probabilities (those of `load_learner(...).predict`), and each bad request gets a 4xx
naming the problem. In process (Starlette's TestClient), on a tiny classifier trained for one batch."""
import numpy as np
import pytest
import torch

pytest.importorskip("spacy", reason="fastbase.text tokenizes with spaCy (the text extra)")
pd = pytest.importorskip("pandas", reason="text tables are read with pandas (the text extra)")
pytest.importorskip("starlette", reason="fastbase serve runs on Starlette (the serve extra)")

from fastbase.core import defaults
from fastbase.data import DataError
from fastbase.learner import load_learner
from fastbase.serve import ServeConfig, ServedModel, create_app
from fastbase.serve_guard import ClientError
from fastbase.serve_text import decode_text_request
from fastbase.text import TextList, Tokenizer, awd_lstm_clas_config, language_model_learner, text_classifier_learner

CONFIG = {**awd_lstm_clas_config, "emb_sz": 8, "n_hid": 16, "n_layers": 1}


@pytest.fixture(scope="module")
def text_export(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "dull"]}
    rows = [{"label": lab, "text": "It was " + " ".join(rng.choice(words[lab], 4)), "is_valid": i >= 16}
            for i, lab in enumerate(["neg", "pos"] * 10)]
    path = tmp_path_factory.mktemp("text_serve")
    data = (TextList.from_df(pd.DataFrame(rows), path, cols="text", tokenizer=Tokenizer(n_cpus=1))
            .split_from_df("is_valid").label_from_df("label").databunch(bs=8, min_freq=1, device="cpu", seed=0))
    defaults.silent = True
    torch.manual_seed(0)
    learn = text_classifier_learner(data, config=CONFIG)
    learn.fit(1, 1e-2)
    learn.export()
    return path / "export.pkl", data


@pytest.fixture(scope="module")
def client(text_export):
    from starlette.testclient import TestClient
    app = create_app(ServeConfig(str(text_export[0])), model=ServedModel(text_export[0], max_text_chars=200))
    with TestClient(app) as c:
        yield c


def test_a_text_gets_the_label_and_probabilities_of_predict(client, text_export):
    reply = client.post("/predict", json={"text": "It was good great fine"})
    assert reply.status_code == 200
    label, _, probs = load_learner(text_export[0]).predict("It was good great fine")
    answer = reply.json()
    assert answer["label"] == str(label) and set(answer["probabilities"]) == {"neg", "pos"}
    assert np.allclose([answer["probabilities"][c] for c in ("neg", "pos")], probs.numpy(), atol=1e-5)
    assert client.get("/info").json()["input"] == "text"


@pytest.mark.parametrize("body, kind, status, words", [
    (b"{not json", "application/json", 400, "not JSON"),
    (b'{"review": "good"}', "application/json", 422, "no \"text\" field (got 'review')"),
    (b'["good"]', "application/json", 422, "no \"text\" field (got a JSON list)"),
    (b'{"text": 3}', "application/json", 422, "a JSON int, not a string"),
    (b'{"text": "  "}', "application/json", 422, "empty"),
    (b'{"text": "' + b"good " * 50 + b'"}', "application/json", 413, "250 characters, over the server's limit of 200"),
    (b"It was good", "text/plain", 415, "application/json"),
])
def test_a_bad_request_gets_a_4xx_naming_the_problem(client, body, kind, status, words):
    reply = client.post("/predict", content=body, headers={"Content-Type": kind})
    assert reply.status_code == status and words in reply.json()["error"]
    assert client.post("/predict", json={"text": "It was bad"}).status_code == 200  # still serving


def test_a_language_model_export_is_refused(text_export, tmp_path):
    lm_data = (TextList.from_df(pd.DataFrame({"text": ["a b c d e f g h"] * 12}), tmp_path, cols="text",
                                tokenizer=Tokenizer(n_cpus=1))
               .split_by_rand_pct(0.2, seed=0).label_for_lm().databunch(bs=2, bptt=4, min_freq=1, device="cpu"))
    language_model_learner(lm_data, config={**CONFIG, "n_layers": 1}, pretrained=False).export()
    with pytest.raises(DataError, match="language model"):
        ServedModel(tmp_path / "export.pkl")
    with pytest.raises(ClientError, match="not UTF-8"):
        decode_text_request(b'{"text": "\xff"}')
