"""Layer 6: the GAN task, whole (lesson 7): models (`basic_generator`, `basic_critic`, `gan_critic`,
`GANModule`), data that make images from noise (`GANItemList`, `GANDataBunch`, `NoisyItem`), the
losses (`GANLoss`, `AdaptiveLoss`, `NoopLoss`, `WassersteinLoss`) and metric
(`accuracy_thresh_expand`), the training callbacks (`GANTrainer`, the switchers,
`GANDiscriminativeLR`) and `GANLearner`. It imports no other task: a super-resolution GAN's generator
comes in as a Learner (`GANLearner.from_learners(unet_learner(...), critic_learner)`).
`fastbase.vision`'s namespace re-exports these names; `fastbase.vision.gan` is fastai's import path.
"""
from ..tfm_funcs import crop_pad
from .data import GANDataBunch, GANImageTargets, GANItemList, NoiseInput, NoisyItem
from .learner import GANLearner
from .losses import (
    AdaptiveLoss,
    CriticLoss,
    GANLoss,
    GeneratorLoss,
    NoopLoss,
    WassersteinLoss,
    accuracy_thresh_expand,
    gan_loss_from_func,
)
from .models import GANModule, basic_critic, basic_generator, gan_critic
from .trainer import AdaptiveGANSwitcher, FixedGANSwitcher, GANDiscriminativeLR, GANTrainer

__all__ = ["AdaptiveGANSwitcher", "AdaptiveLoss", "CriticLoss", "FixedGANSwitcher", "GANDataBunch",
           "GANDiscriminativeLR", "GANImageTargets", "GANItemList", "GANLearner", "GANLoss", "GANModule",
           "GANTrainer", "GeneratorLoss", "NoiseInput", "NoisyItem", "NoopLoss", "WassersteinLoss",
           "accuracy_thresh_expand", "basic_critic", "basic_generator", "crop_pad", "gan_critic",
           "gan_loss_from_func"]
