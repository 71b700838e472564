"""The ``distill`` section: one-shot federated learning by data-free distillation
(synthesis, student, baselines)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from fedweave.config.base import RootView, Section, changed
from fedweave.config.model import ModelConfig, check_milestones

#: lr, Adam steps per batch, α_tv, α_l2, α_bn, α_comp
SYNTHESIS_PRESETS: dict[str, dict[str, float]] = {
    "custom": {"lr": 0.1, "iterations": 1000, "tv": 1e-3, "l2": 0.0, "bn": 10.0,
               "competition": 10.0},
    "custom_more_iterations": {"lr": 0.1, "iterations": 3000, "tv": 1e-3, "l2": 0.0,
                               "bn": 10.0, "competition": 10.0},
    "paper": {"lr": 0.05, "iterations": 2000, "tv": 2.5e-5, "l2": 3e-8, "bn": 10.0,
              "competition": 10.0},
}


class SynthesisConfig(Section):
    """DeepInversion and Adaptive DeepInversion (Yin et al. 2020, "Dreaming to Distill"): the
    images a batch of the synthetic set is made of (``fedweave.algorithms.oneshot``). A key
    left null takes the ``preset``'s value."""

    preset: Literal["custom", "custom_more_iterations", "paper"] = Field(
        "custom", description="custom: lr 0.1, 1000 iterations, α_tv 1e-3, α_l2 0, α_bn 10, "
        "α_comp 10; custom_more_iterations: the same with 3000 iterations; paper: lr 0.05, 2000 "
        "iterations, α_tv 2.5e-5, α_l2 3e-8, α_bn 10, α_comp 10")
    iterations: int | None = Field(None, ge=1, description="Adam steps per batch (null: preset)")
    lr: float | None = Field(None, gt=0, description="Adam learning rate on the images, in "
                             "normalised input units per step (null: preset)")
    tv: float | None = Field(None, ge=0, description="α_tv, weight of the total variation "
                             "(sum of the L2 norms of 4 difference maps) (null: preset)")
    l2: float | None = Field(None, ge=0, description="α_l2, weight of the batch's Frobenius "
                             "norm ‖x̃‖ (null: preset)")
    bn: float | None = Field(None, ge=0, description="α_bn, weight of Σ_BN ‖σ²_b − running_var‖₂ "
                             "+ ‖μ_b − running_mean‖₂ (null: preset)")
    competition: float | None = Field(None, ge=0, description="α_comp, weight of Adaptive "
                                      "DeepInversion's 1 − JS(teacher ‖ student) (null: preset)")
    temperature: float = Field(3.0, gt=0, description="softmax temperature of the competition "
                               "term (unitless)")
    divergence: Literal["js", "reversed_kl"] = Field(
        "js", description="competition divergence: js = ½KL(p‖m) + ½KL(q‖m), the Jensen–Shannon "
        "divergence; reversed_kl = ½KL(m‖p) + ½KL(m‖q), what the seed and NVlabs code compute")
    batch_size: int = Field(256, ge=1, description="images per synthesised batch (the BN "
                            "statistics are over one batch)")
    jitter: int = Field(2, ge=0, description="random roll of the images by up to ± this many "
                        "pixels per iteration and axis")
    flip: bool = Field(False, description="also mirror the images horizontally at random per "
                       "iteration")
    initial_batches: int = Field(50, ge=0, description="batches made with non-adaptive "
                                 "DeepInversion before the student trains (stage synthesize)")
    sampling: int = Field(0, ge=0, description="sampling DeepInversion (reference "
                          "system 003's Algorithm 1): "
                          "each iteration averages the loss of this many teachers drawn without "
                          "replacement, CE weighted by each teacher's class frequencies; 0 = "
                          "teachers cycled, one batch each, loss masked to the teacher's classes")
    batches_from: Path | None = Field(
        None, description="a finished distill run directory whose initial batches "
        "(synthesize/batches/*.safetensors) are copied instead of synthesised — a second "
        "student variant on the same synthetic data; its teachers must have been trained with "
        "this config's teacher settings (they are reused too unless --teachers names others)")

    def resolved(self) -> dict[str, float]:
        """lr, iterations, tv, l2, bn, competition: the keys set here over the preset's."""
        out = dict(SYNTHESIS_PRESETS[self.preset])
        for key in out:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class StudentConfig(Section):
    """The student trained on the synthetic set (reference system 003's train_student.py)."""

    model: ModelConfig | None = Field(None, description="the student's architecture (null: "
                                      "the teachers' model section)")
    epochs: int = Field(300, ge=1, description="student epochs (an epoch is steps_per_epoch "
                        "steps)")
    steps_per_epoch: int = Field(195, ge=1, description="SGD steps per student epoch (the seed: "
                                 "⌊50000 / 256⌋)")
    batch_size: int = Field(256, ge=1, description="images per student step")
    lr: float = Field(0.1, gt=0, description="SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay (L2 coefficient)")
    milestones: list[int] = Field(default_factory=lambda: [150, 250], description="epochs after "
                                  "which lr is multiplied by gamma (MultiStepLR)")

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, value: list[int]) -> list[int]:
        return check_milestones(value, "epochs")
    gamma: float = Field(0.1, gt=0, description="MultiStepLR factor")
    loss: Literal["ce", "kl"] = Field("ce", description="ce: cross-entropy on the synthesised "
                                      "labels; kl: KL(teacher ensemble ‖ student) at temperature")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of loss: kl")
    class_weights: list[float] | None = Field(None, description="per-class weights of the "
                                              "cross-entropy (one per class; null: equal)")
    augment: bool = Field(True, description="random crop (after crop_padding zero padding) + "
                          "horizontal flip on every pooled image")
    crop_padding: int = Field(4, ge=0, description="augment: zero padding of the random crop, "
                              "in pixels per side (the seed's CIFAR-10 transform: 4)")
    adaptive: bool = Field(True, description="make new batches with Adaptive DeepInversion "
                           "(competition against the current student); false: plain DI")
    new_batches_per_epoch: int = Field(2, ge=0, description="batches synthesised per epoch, each "
                                       "trained on at once and added to the pool")


Baseline = Literal["real", "noise"]


def _every_baseline() -> list[Baseline]:
    return ["real", "noise"]


class DistillConfig(Section):
    """One-shot federated learning by data-free distillation (reference system 003,
    ``fedweave distill``): one teacher per client (``algorithm.name: local``, ``rounds`` epochs)
    → synthetic images from the teachers → a student trained on them."""

    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig, description="how the "
                                       "synthetic images are made (DeepInversion)")
    student: StudentConfig = Field(default_factory=StudentConfig, description="the student "
                                   "trained on the synthetic set")
    student_shards: int = Field(0, ge=0, description="the last k of the data.nodes shards stay "
                                "at the student as real training data and train no teacher "
                                "(the seed's 'half the data at the student': nodes 2, k 1)")
    baselines: list[Baseline] = Field(
        default_factory=_every_baseline, description="students trained the same way on the "
        "clients' real data (upper bound) and on random-noise images labelled by the teachers' "
        "ensemble (lower bound)")

    def check(self, config: RootView) -> None:
        """The distill section belongs to ``fedweave distill`` (teachers: ``local``) and must
        leave a teacher."""
        alg = config.algorithm
        if changed(self) and alg.name != "local":
            raise ValueError(f"distill.{changed(self)[0]}: the distill section is for "
                             f"fedweave distill, whose teachers are algorithm.name=local (not "
                             f"{alg.name})")
        if self.student_shards >= config.data.nodes:
            raise ValueError(f"distill.student_shards={self.student_shards} leaves no "
                             f"teacher among data.nodes={config.data.nodes} shards")
