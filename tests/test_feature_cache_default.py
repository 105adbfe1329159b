"""cnn_learner's automatic feature cache: on by default for a frozen pretrained body, exact with
deterministic transforms, shared by lr_find, fits and validation, dropped at unfreeze, bounded."""
import pytest
import torch
from test_feature_cache import count_body_calls, root_fixture  # noqa: F401 -- the `root` fixture
from tiny_vision import tiny_learner

from fastbase.interpret import ClassificationInterpretation
from fastbase.vision.feature_cache import DEFAULT_N_VIEWS, FeatureCache
from fastbase.vision.transforms import get_transforms


def the_cache(learn) -> FeatureCache:
    return next(cb for cb in learn.callbacks if isinstance(cb, FeatureCache))


def lesson(learn):
    """lr_find, then a frozen one-cycle fit: what the cache serves."""
    learn.lr_find(num_it=12, stop_div=False)
    learn.fit_one_cycle(2, 1e-2)


def test_the_default_cache_gives_the_same_head_weights_as_training_without_it(root):
    runs = []
    for feature_cache in (False, None):
        learn = tiny_learner(root, feature_cache=feature_cache)  # pretrained defaults: BN fixed, body frozen
        calls = count_body_calls(learn)
        lesson(learn)
        runs.append((learn.model[1].state_dict(), learn.recorder.values, sum(calls)))
    (plain, plain_values, plain_calls), (cached, cached_values, cached_calls) = runs
    for name in plain:
        assert torch.allclose(plain[name].float(), cached[name].float(), atol=1e-5), name
    assert torch.allclose(torch.tensor(cached_values), torch.tensor(plain_values), atol=1e-5)
    assert cached_calls == 24 + 10 < plain_calls  # one pass over the training and the validation images


def test_lr_find_caches_the_training_views_only_and_the_fit_reuses_them(root):
    learn = tiny_learner(root)
    calls = count_body_calls(learn)
    learn.lr_find(num_it=12, stop_div=False)
    assert sum(calls) == 24 and the_cache(learn)._valid is None  # lr_find has no validation
    learn.fit_one_cycle(1, 1e-2)
    assert sum(calls) == 24 + 10


def test_the_same_lr_find_sweep_with_and_without_the_cache(root):
    sweeps = []
    for feature_cache in (False, True):
        learn = tiny_learner(root, feature_cache=feature_cache)
        learn.lr_find(num_it=12, stop_div=False)
        sweeps.append(learn.recorder.losses)
    assert sweeps[1] == pytest.approx(sweeps[0], abs=1e-5)


def test_feature_cache_false_on_the_learner_turns_it_off(root):
    learn = tiny_learner(root)
    learn.feature_cache = False
    calls = count_body_calls(learn)
    learn.fit(2, 1e-2)
    assert sum(calls) == 2 * (24 + 10)


def test_a_random_body_caches_only_when_asked_and_frozen(root):
    learn = tiny_learner(root, pretrained=False, train_bn=False, freeze_bn_stats=True)  # tiny_arch is random anyway
    assert learn.feature_cache is False and learn.n_frozen == 0
    learn = tiny_learner(root, pretrained=False, train_bn=False, freeze_bn_stats=True, feature_cache=True)
    learn.freeze()
    calls = count_body_calls(learn)
    learn.fit(2, 1e-2)
    assert sum(calls) == 24 + 10 and the_cache(learn).reasons == []


def test_the_fit_says_what_is_cached_and_how_to_turn_it_off(root, capsys):
    learn = tiny_learner(root, silent=False)
    learn.fit(1, 1e-2)
    out = capsys.readouterr().out
    assert "FeatureCache: head trains on cached body features (24 training items and 10 validation items" in out
    assert "learn.feature_cache = False" in out


def test_interpretation_of_the_frozen_model_reuses_the_cache_and_unfreeze_drops_it(root):
    learn = tiny_learner(root)
    learn.fit(1, 1e-2)
    calls = count_body_calls(learn)
    interp = ClassificationInterpretation.from_learner(learn)
    assert sum(calls) == 0
    learn.feature_cache = False
    plain = ClassificationInterpretation.from_learner(learn)
    assert sum(calls) == 10 and torch.allclose(interp.losses, plain.losses, atol=1e-5)
    learn.feature_cache = True
    learn.unfreeze()
    assert the_cache(learn)._train == [] and the_cache(learn)._valid is None
    learn.fit(1, 1e-4)
    assert sum(calls) == 10 + 24 + 10  # unfrozen: the whole model trains and validates


def test_augmented_training_caches_the_default_number_of_views_as_the_epochs_need_them(root):
    learn = tiny_learner(root, ds_tfms=get_transforms())
    calls = count_body_calls(learn)
    learn.fit(1, 1e-2)
    assert sum(calls) == 24 + 10  # one view built so far
    learn.fit(DEFAULT_N_VIEWS + 1, 1e-2)
    assert sum(calls) == DEFAULT_N_VIEWS * 24 + 10  # then one per epoch, used in turn
    assert len(the_cache(learn)._train) == DEFAULT_N_VIEWS


def test_lr_find_with_augmentation_builds_one_view_and_the_fit_builds_the_rest(root):
    learn = tiny_learner(root, ds_tfms=get_transforms())
    calls = count_body_calls(learn)
    learn.lr_find(num_it=12, stop_div=False)  # 4 passes over the 3 batches: one view only
    assert sum(calls) == 24
    learn.fit(DEFAULT_N_VIEWS, 1e-2)
    assert sum(calls) == DEFAULT_N_VIEWS * 24 + 10


def test_a_cache_past_its_memory_budget_falls_back_with_the_figure_or_raises(root, capsys):
    learn = tiny_learner(root, silent=False, callbacks=[FeatureCache(auto=True, max_memory=100)], feature_cache=False)
    learn.feature_cache = True
    calls = count_body_calls(learn)
    learn.fit(1, 1e-2)
    out = capsys.readouterr().out
    assert "not caching, training as usual: the cache would take 0 MB" in out and "memmap=True" in out
    assert sum(calls) == 8 + 24 + 10  # the first batch, then a plain epoch
    from fastbase.vision.feature_cache import FeatureCacheError
    with pytest.raises(FeatureCacheError, match="the limit is 0 MB"):
        learn.fit(1, 1e-2, callbacks=[FeatureCache(max_memory=100)])


def test_a_memory_mapped_cache_lives_under_the_data_folder_and_gives_the_same_head(root):
    heads = []
    for memmap in (False, True):
        learn = tiny_learner(root, callbacks=[FeatureCache(auto=True, memmap=memmap)])
        learn.fit_one_cycle(2, 1e-2)
        heads.append(learn.model[1].state_dict())
    files = sorted((root / "feature_cache").glob("*.bin"))
    assert [f.name.split("-")[1] for f in files] == ["train0.bin", "valid.bin"]
    assert files[0].stat().st_size == 24 * 16 * 4  # 24 items x 16 pooled features (concat pooling of 8 channels)
    for name in heads[0]:
        assert torch.allclose(heads[0][name].float(), heads[1][name].float(), atol=1e-5), name
    learn.unfreeze()
    assert not list((root / "feature_cache").glob("*.bin"))  # dropped with the cache


def test_mixed_precision_takes_the_forward_pass_and_the_cache_gives_way(root):
    learn = tiny_learner(root).to_fp16()
    learn.fit(1, 1e-2)
    assert "mixed precision" in the_cache(learn).reasons[0]


def test_overfit_and_sanity_check_run_beside_the_default_cache(root):
    learn = tiny_learner(root)
    assert learn.overfit(n_items=4, steps=5, threshold=0.0).steps == 5
    assert learn.sanity_check(n_steps=3, show=False) is not None


@pytest.mark.parametrize("flags, cached", [([], True), (["--no-cache"], False)])
def test_fastbase_train_caches_by_default_and_no_cache_turns_it_off(root, tmp_path, monkeypatch, flags, cached):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from fastbase.cli import main

    monkeypatch.setenv("FASTBASE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FASTBASE_NO_BAR", "0")
    out, err = io.StringIO(), io.StringIO()
    argv = ["train", str(root), "--arch", "tiny_vision:tiny_arch", "--size", "16", "--bs", "8", "--workers", "0",
            "--seed", "0", "--lr-find-iters", "5", "--epochs", "1", "--unfreeze-epochs", "0", "--no-flip",
            "--out", str(tmp_path / "run"), "--json", *flags]
    with redirect_stdout(out), redirect_stderr(err):
        assert main(argv) == 0
    assert ("FeatureCache: head trains on cached body features" in err.getvalue()) is cached
    assert out.getvalue().lstrip().startswith("{")  # stdout holds the JSON only
