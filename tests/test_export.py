"""export/load_learner: a plain-data bundle (no pickled Learner) that loads with weights_only=True
and rebuilds the model from an importable factory."""
import pytest
import torch
from tiny_models import make_data, make_learner, tiny_mlp

from fastbase.export import ExportError, UnsafeFileError
from fastbase.learner import Learner, load_learner

SPEC = {"factory": "tiny_models:tiny_mlp", "kwargs": {"n_in": 8, "n_out": 2, "hidden": 16}}


def trained(tmp_path, **kwargs):
    data = make_data()
    data.normalize()
    learn = make_learner(data, path=tmp_path, model_spec=SPEC, **kwargs)
    learn.fit(2, lr=1e-2)
    return learn


def test_export_and_load_learner_give_identical_predictions(tmp_path):
    learn = trained(tmp_path)
    file = learn.export()
    assert file == tmp_path / "export.pkl"
    for source in (tmp_path, file):  # the folder or the file itself
        loaded = load_learner(source)
        assert loaded.data.inference_only and loaded.data.classes == ["a", "b"]
        for i in range(5):
            x = learn.data.valid_ds[i][0]
            (label, idx, probs), (label2, idx2, probs2) = learn.predict(x), loaded.predict(x)
            assert label == label2 and int(idx) == int(idx2) and torch.allclose(probs, probs2)


def test_the_export_file_is_plain_data(tmp_path):
    file = trained(tmp_path).export("bundle.pkl")
    state = torch.load(file, weights_only=True)
    assert set(state) == {"fastbase_version", "model_spec", "data", "state_dict", "loss_func", "learner", "file_format",
                          "sha256"}
    assert state["learner"] == "fastbase.learner:Learner"
    assert state["model_spec"] == SPEC and state["loss_func"] == "torch.nn.modules.loss:CrossEntropyLoss"
    assert state["data"]["type"] == "fastbase.data.bunch:DataBunch" and state["data"]["stats"] is not None


def test_a_torch_class_can_be_the_factory(tmp_path):
    data = make_data()
    learn = Learner(data, torch.nn.Linear(8, 2), path=tmp_path, silent=True,
                    model_spec={"factory": "torch.nn:Linear", "kwargs": {"in_features": 8, "out_features": 2}})
    loaded = load_learner(learn.export())
    x = data.valid_ds[0][0]
    assert torch.allclose(learn.predict(x)[2], loaded.predict(x)[2])


def test_export_without_model_spec_says_how_to_set_it(tmp_path):
    with pytest.raises(ExportError, match="model_spec = {'factory'"):
        make_learner(path=tmp_path).export()


@pytest.mark.parametrize("factory, message", [
    (lambda: tiny_mlp(), "cannot be imported by another program"),
    ("__main__:build", "defined in __main__"),
    ("tiny_models:no_such_function", "cannot be imported"),
])
def test_export_names_a_factory_that_cannot_be_imported(tmp_path, factory, message):
    learn = make_learner(path=tmp_path, model_spec={"factory": factory, "kwargs": {}})
    with pytest.raises(ExportError, match=message):
        learn.export()
    assert not (tmp_path / "export.pkl").exists()


def test_export_refuses_arguments_that_are_not_plain_data(tmp_path):
    learn = make_learner(path=tmp_path, model_spec={"factory": "tiny_models:tiny_mlp", "kwargs": {"act": torch.nn.ReLU}})
    with pytest.raises(ExportError, match="plain data"):
        learn.export()


def test_load_learner_refuses_a_tampered_file(tmp_path):
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model_spec": RunsCode(), "state_dict": {}, "data": {}}, tmp_path / "export.pkl")
    with pytest.raises(UnsafeFileError):
        load_learner(tmp_path)
    assert not marker.exists()


def test_an_inference_learner_cannot_train(tmp_path):
    loaded = load_learner(trained(tmp_path).export())
    with pytest.raises(Exception, match="inference"):
        loaded.fit(1)
