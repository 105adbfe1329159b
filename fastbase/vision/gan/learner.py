"""Layer 6: `GANLearner`, a Learner over a `GANModule` (generator and critic) with `GANLoss` and the
`GANTrainer` callback, as fastai v1's: built from the two models and their losses, from a pretrained
generator's and critic's Learners (`from_learners`, lesson7-superres-gan), or as a WGAN (`wgan`,
lesson7-wgan). `learn.gan_trainer.switch(gen_mode=True)` before drawing or predicting by hand;
`show_results` and `predict` use the generator themselves. `export` writes the generator alone, for
`load_learner` and `predict` on the generator's data."""
from __future__ import annotations

import pathlib
from functools import partial

from ...callback import callback_from_fn
from ...core import FastbaseError, Path, ifnone, object_ref
from ...data import DatasetType
from ...export import export_state, write_state
from ...learner import Learner
from .losses import GANLoss, NoopLoss, WassersteinLoss, gan_loss_from_func
from .models import GANModule
from .trainer import FixedGANSwitcher, GANTrainer

__all__ = ["GANLearner"]


class GANLearner(Learner):
    """A Learner training `generator` against `critic` on `data`: `gen_loss_func(fake_pred, output,
    target)` for the generator, `crit_loss_func(real_pred, fake_pred)` for the critic. `switcher` (a
    callback class or partial, default `FixedGANSwitcher(n_crit=1, n_gen=1)`) decides when they
    alternate; `gen_first` starts with the generator; `switch_eval`, `clip` and `show_img` go to
    `GANTrainer` (`learn.gan_trainer`). `gen_spec` (a `model_spec` of the generator) lets `export`
    write it; `from_learners` takes the generator Learner's. Other arguments go to the Learner
    (`opt_func`, `wd`, `callback_fns`, `path`...)."""

    def __init__(self, data, generator, critic, gen_loss_func, crit_loss_func, switcher=None, gen_first: bool = False,
                 switch_eval: bool = True, show_img: bool = True, clip: float | None = None, gen_spec=None,
                 **learn_kwargs):
        gan = GANModule(generator, critic, gen_mode=gen_first)
        super().__init__(data, gan, loss_func=GANLoss(gen_loss_func, crit_loss_func, gan), **learn_kwargs)
        self.gen_spec = gen_spec
        self.gan_trainer = GANTrainer(clip=clip, switch_eval=switch_eval, show_img=show_img)
        self.gan_trainer.learn = self
        self.switcher = callback_from_fn(ifnone(switcher, partial(FixedGANSwitcher, n_crit=1, n_gen=1)), self)
        self.callbacks += [self.gan_trainer, self.switcher]
        self.gan_trainer.switch(gen_first)

    @classmethod
    def from_learners(cls, learn_gen: Learner, learn_crit: Learner, switcher=None, weights_gen=None,
                      **learn_kwargs) -> GANLearner:
        """A GAN from a generator's Learner (its data, model and loss: e.g. `unet_learner` with a pixel
        loss) and a critic's (its model and loss, e.g. `AdaptiveLoss(nn.BCEWithLogitsLoss())`): the
        generator's loss is `weights_gen[0]` x fooling the critic + `weights_gen[1]` x its own loss."""
        gen_loss, crit_loss = gan_loss_from_func(learn_gen.loss_func, learn_crit.loss_func, weights_gen)
        learn_kwargs.setdefault("path", learn_gen.path)
        return cls(learn_gen.data, learn_gen.model, learn_crit.model, gen_loss, crit_loss, switcher=switcher,
                   gen_spec=learn_gen.model_spec, **learn_kwargs)

    @classmethod
    def wgan(cls, data, generator, critic, switcher=None, clip: float = 0.01, switch_eval: bool = False,
             **learn_kwargs) -> GANLearner:
        """A Wasserstein GAN: `NoopLoss` and `WassersteinLoss`, the critic's weights clipped to `clip`,
        five critic batches per generator batch unless `switcher` says otherwise."""
        switcher = ifnone(switcher, partial(FixedGANSwitcher, n_crit=5, n_gen=1))
        return cls(data, generator, critic, NoopLoss(), WassersteinLoss(), switcher=switcher, clip=clip,
                   switch_eval=switch_eval, **learn_kwargs)

    @property
    def metric_names(self) -> list[str]:
        """The metrics' names, then the mean training loss of the generator and of the critic."""
        return [*super().metric_names, "gen_loss", "disc_loss"]

    def predict(self, item, thresh: float = 0.5):
        """The generator's image for one input (noise, or a small image), as `Learner.predict`."""
        with self.gan_trainer.generating():
            return super().predict(item, thresh)

    def show_results(self, ds_type: DatasetType = DatasetType.Train, rows: int = 5, **kwargs):
        """The generator's images for one batch of `ds_type` (the data draws them)."""
        with self.gan_trainer.generating():
            return super().show_results(ds_type=ds_type, rows=rows, **kwargs)

    def export(self, fname="export.pkl") -> pathlib.Path:
        """Write the generator alone as an export (`load_learner` gives a plain Learner that predicts
        images), with the data's settings and loss. Needs the generator's `gen_spec`."""
        if self.gen_spec is None:
            raise FastbaseError("GANLearner.export writes the generator, so it needs how to rebuild it: build the "
                                "GAN with GANLearner.from_learners (the generator's Learner knows), or pass "
                                "gen_spec=model_spec(factory, kwargs) (fastbase.export.model_spec).")
        file = Path(fname) if isinstance(fname, pathlib.PurePath) else self.path / fname
        state = export_state(self.model.generator, self.gen_spec, self.data, self.data.loss_func,
                             learner=object_ref(Learner))
        return write_state(state, file)
