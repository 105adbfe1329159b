"""Frozen-body feature caching: the head trains on cached body features to the same weights as
without the cache, the body runs only while caching, and the cache says why when it cannot apply."""
import pytest
import torch
from tiny_vision import noise_folder, tiny_learner

from fastbase.vision.feature_cache import FeatureCache, FeatureCacheError
from fastbase.vision.transforms import get_transforms

CACHEABLE = {"train_bn": False, "freeze_bn_stats": True}


@pytest.fixture(scope="module", name="root")
def root_fixture(tmp_path_factory):
    return noise_folder(tmp_path_factory.mktemp("images"))


def count_body_calls(learn) -> list:
    calls = []
    learn.model[0].register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return calls


def test_cached_features_give_the_same_head_and_losses_as_the_uncached_path(root):
    runs = []
    for callbacks in ([], [FeatureCache()]):
        # the head has BatchNorm and Dropout (ps=0.5): both train; feature_cache=False: no automatic cache
        learn = tiny_learner(root, feature_cache=False, **CACHEABLE)
        learn.fit_one_cycle(2, 1e-2, callbacks=callbacks)
        runs.append((learn.model.state_dict(), learn.recorder.losses, learn.recorder.values))
    (plain, plain_losses, plain_values), (cached, cached_losses, cached_values) = runs
    for name in plain:
        assert torch.allclose(plain[name].float(), cached[name].float(), atol=1e-5), name
    assert cached_losses == pytest.approx(plain_losses, abs=1e-5)
    assert torch.allclose(torch.tensor(cached_values), torch.tensor(plain_values), atol=1e-5)


def test_the_body_runs_only_to_build_the_cache_and_the_cache_is_kept_between_fits(root):
    learn = tiny_learner(root, **CACHEABLE)
    calls, cache = count_body_calls(learn), FeatureCache()
    learn.fit(2, 1e-2, callbacks=[cache])
    assert sum(calls) == 24 + 10  # one pass over the training and the validation images
    learn.fit(1, 1e-2, callbacks=[cache])
    assert sum(calls) == 34  # same body weights, same data: the cache is reused
    with torch.no_grad():
        learn.model[0][0].weight.mul_(0.5)
    learn.fit(1, 1e-2, callbacks=[cache])
    assert sum(calls) == 68  # the body changed: the cache is rebuilt


@pytest.mark.parametrize("kwargs, reason", [
    ({"pretrained": False, **CACHEABLE}, "the body is not frozen"),
    ({"train_bn": True}, "train_bn=False"),
    ({"freeze_bn_stats": False}, "freeze_bn_stats=True"),
    ({"ds_tfms": get_transforms(), **CACHEABLE}, "n_views"),
])
def test_the_cache_refuses_with_the_reason_when_it_does_not_apply(root, kwargs, reason):
    learn = tiny_learner(root, **kwargs)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(FeatureCacheError, match=reason):
        learn.fit(1, 1e-2, callbacks=[FeatureCache()])
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())


def test_cnn_learner_defaults_for_a_pretrained_body_are_cacheable(root):
    learn = tiny_learner(root)
    learn.fit(1, 1e-2, callbacks=[FeatureCache()])  # raises FeatureCacheError where it does not apply


def test_auto_mode_trains_as_usual_where_it_does_not_apply_and_says_when_it_does(root, capsys):
    cache = FeatureCache(auto=True)
    learn = tiny_learner(root, callbacks=[cache], silent=False, **CACHEABLE)
    learn.fit(1, 1e-2)
    assert cache.reasons == [] and "FeatureCache: head trains on cached body features" in capsys.readouterr().out
    learn.unfreeze()
    calls = count_body_calls(learn)
    learn.fit(1, 1e-3)
    assert "not frozen" in cache.reasons[0] and sum(calls) == 24 + 10  # a plain epoch: train and validate
    assert "FeatureCache" not in capsys.readouterr().out


def test_n_views_caches_augmented_passes_used_in_turn(root):
    learn = tiny_learner(root, ds_tfms=get_transforms(), **CACHEABLE)
    calls, cache = count_body_calls(learn), FeatureCache(n_views=2)
    learn.fit(2, 1e-2, callbacks=[cache])
    assert sum(calls) == 2 * 24 + 10
    (first, _), (second, _) = cache._train
    assert first.shape == second.shape == (24, 16) and not torch.allclose(first, second)


def test_validate_after_a_cached_fit_reuses_the_cached_validation_features(root):
    learn = tiny_learner(root, **CACHEABLE)  # cnn_learner's automatic cache
    learn.fit(1, 1e-2)
    calls = count_body_calls(learn)
    assert learn.validate() == pytest.approx(learn.recorder.values[-1][1:], abs=1e-5)
    assert sum(calls) == 0
    learn.feature_cache = False
    assert learn.validate() == pytest.approx(learn.recorder.values[-1][1:], abs=1e-5)
    assert sum(calls) == 10  # the whole model again
