"""FieldHybridRegressor: the hybrid model for 2D velocity fields [B, C, H, W].

Output O = alpha * S(x) + (1 - alpha) * N(x, S(x)), with N a small periodic CNN predicting a
mean field and a per-pixel log sigma. The loss adds to reconstruction and Gaussian NLL the
risk penalties of the output (R_cog: divergence and rotational roughness; R_eff: gradient
magnitude). Intervals come from normalised split-conformal scores pooled over the pixels of
the calibration fields, or with band="field" from one score per calibration field (its
largest normalised error), so that the whole field is covered at once (sctk.uq.field_bands);
Psi, the confidence score, is reported per field.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from sctk.errors import SctkError
from sctk.uq.alpha import HybridWeight
from sctk.uq.conformal import ConformalCalibrator
from sctk.uq.field_bands import check_band, field_scores
from sctk.uq.hybrid import _torch_threads, resolve_physics
from sctk.uq.networks import ResidualCNN
from sctk.uq.risk import psi, r_cog, r_eff


def as_fields(x: Any, name: str = "X") -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 4 or array.shape[0] == 0 or array.shape[1] < 2:
        raise SctkError(
            f"{name} must be velocity fields of shape [B, C>=2, H, W]; got {list(array.shape)}."
        )
    if not np.all(np.isfinite(array)):
        raise SctkError(f"{name} holds NaN or infinite values; remove or fill them first.")
    return array


class FieldHybridRegressor:
    def __init__(
        self,
        physics: Any = None,
        dx: float = 2 * math.pi / 32,
        dy: float | None = None,
        width: int = 32,
        depth: int = 3,
        epochs: int = 30,
        batch_size: int = 16,
        lr: float = 2e-3,
        alpha: float = 0.5,
        alpha_mode: str = "learned",
        alpha_bounds: tuple[float, float] = (0.0, 1.0),
        scheduler: dict[str, float] | None = None,
        recon_weight: float = 0.5,
        nll_weight: float = 1.0,
        cog_weight: float = 1e-3,
        eff_weight: float = 0.0,
        beta: float = 1.0,
        lambda1: float | None = None,
        lambda2: float | None = None,
        seed: int = 0,
        threads: int = 1,
        band: str = "pixel",
    ):
        self.physics = physics
        self.dx = dx
        self.dy = dy
        self.width = width
        self.depth = depth
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.alpha = alpha
        self.alpha_mode = alpha_mode
        self.alpha_bounds = alpha_bounds
        self.scheduler = scheduler
        self.recon_weight = recon_weight
        self.nll_weight = nll_weight
        self.cog_weight = cog_weight
        self.eff_weight = eff_weight
        self.beta = beta
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.seed = seed
        self.threads = threads
        self.band = band  # "pixel" or "field" (whole-field bands): sctk.uq.field_bands

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    @property
    def _dy(self) -> float:
        return self.dy if self.dy is not None else self.dx

    def _physics(self, X: np.ndarray) -> np.ndarray:
        if self.physics_fn_ is None:
            return np.zeros_like(X)
        out = np.asarray(self.physics_fn_(X), dtype=np.float64)
        if out.shape != X.shape or not np.all(np.isfinite(out)):
            raise SctkError("The physics function must return finite fields shaped like X.")
        return out

    def _tensors(self, X: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.scale_
        s = torch.as_tensor(self._physics(X) / scale, dtype=torch.float32)
        x = torch.as_tensor(X / scale, dtype=torch.float32)
        return torch.cat([x, s], dim=1), s

    def _forward(self, features, physics):
        mu_n, log_sigma = self.net_(features)
        a = self.weight_.value()
        return a * physics + (1 - a) * mu_n, log_sigma

    def _loss(self, mean, log_sigma, y):
        nll = 0.5 * (2 * log_sigma + (y - mean) ** 2 / torch.exp(2 * log_sigma)).mean()
        loss = self.recon_weight * ((y - mean) ** 2).mean() + self.nll_weight * nll
        if self.cog_weight:
            loss = loss + self.cog_weight * r_cog(mean, self.dx, self._dy).mean()
        if self.eff_weight:
            loss = loss + self.eff_weight * r_eff(mean, self.dx, self._dy).mean()
        return loss

    def fit(self, X, y, X_cal, y_cal, callback=None) -> FieldHybridRegressor:
        """Train on fields (X -> y), calibrate on (X_cal, y_cal).

        CALLBACK, when given, is called after each epoch as callback(epoch, epochs, loss)
        (epoch counted from 1); an exception it raises stops the fit.
        """
        with _torch_threads(self.threads):
            return self._fit(X, y, X_cal, y_cal, callback)

    def _fit(self, X, y, X_cal, y_cal, callback=None) -> FieldHybridRegressor:
        X, y = as_fields(X), as_fields(y, "y")
        X_cal, y_cal = as_fields(X_cal, "X_cal"), as_fields(y_cal, "y_cal")
        for name, a, b in (("y", y, X), ("X_cal", X_cal[:1], X[:1]), ("y_cal", y_cal, X_cal)):
            if a.shape[1:] != b.shape[1:] or (name != "X_cal" and len(a) != len(b)):
                raise SctkError(f"{name} has shape {list(a.shape)}, which does not match X.")
        torch.manual_seed(self.seed)
        self.physics_fn_ = resolve_physics(self.physics)
        self.shape_ = X.shape[1:]
        self.scale_ = float(np.sqrt(np.mean(y**2))) or 1.0
        self.net_ = ResidualCNN(X.shape[1], self.width, self.depth)
        self.weight_ = HybridWeight(
            self.alpha,
            self.alpha_mode,
            self.alpha_bounds,
            self.scheduler,
            active=self.physics_fn_ is not None,
        )
        features, physics = self._tensors(X)
        target = torch.as_tensor(y / self.scale_, dtype=torch.float32)
        params = [*self.net_.parameters(), *self.weight_.trainable()]
        optimiser = torch.optim.Adam(params, lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        best, best_state = math.inf, None
        self.history_: list[dict[str, float]] = []
        for epoch in range(self.epochs):
            self.net_.train()
            order = torch.randperm(len(X), generator=generator)
            total, variance = 0.0, 0.0
            for i in range(0, len(order), self.batch_size):
                batch = order[i : i + self.batch_size]
                mean, log_sigma = self._forward(features[batch], physics[batch])
                loss = self._loss(mean, log_sigma, target[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(batch)
                variance += float(torch.exp(2 * log_sigma.detach()).mean()) * len(batch)
            score = total / len(X)
            self.weight_.after_epoch(variance / len(X))
            self.history_.append({"epoch": epoch, "loss": score, "alpha": float(self.weight_)})
            if callback is not None:
                callback(epoch + 1, self.epochs, score)
            if score < best:
                best = score
                best_state = (copy.deepcopy(self.net_.state_dict()), self.weight_.snapshot())
        if best_state is not None:
            self.net_.load_state_dict(best_state[0])
            self.weight_.restore(best_state[1])
        self.alpha_ = float(self.weight_)
        # Unless given, the risk weights are set so that a field as rough as the training
        # truth scores Psi = beta * exp(-0.2): the risks then read relative to real flows.
        truth = torch.as_tensor(y / self.scale_)
        ref_cog = float(r_cog(truth, self.dx, self._dy).mean()) or 1.0
        ref_eff = float(r_eff(truth, self.dx, self._dy).mean()) or 1.0
        self.lambda1_ = self.lambda1 if self.lambda1 is not None else 0.1 / ref_cog
        self.lambda2_ = self.lambda2 if self.lambda2 is not None else 0.1 / ref_eff
        self.calibrate(X_cal, y_cal)
        return self

    def calibrate(self, X_cal, y_cal) -> FieldHybridRegressor:
        """(Re)compute the conformal scores on (X_cal, y_cal), keeping the trained network."""
        X_cal = self._check(X_cal, fitted=False)
        y_cal = as_fields(y_cal, "y_cal")
        if y_cal.shape != X_cal.shape:
            raise SctkError(
                f"y_cal has shape {list(y_cal.shape)}, which does not match X_cal's "
                f"{list(X_cal.shape)}."
            )
        with _torch_threads(self.threads):
            mean, sigma = self._mean_sigma(X_cal)
        if check_band(getattr(self, "band", "pixel")) == "field":
            # one score per field, its largest normalised error: a band that holds the whole
            # field at once (sctk.uq.field_bands); scores of 1 and sigma of 1 keep them as-is
            worst = field_scores(y_cal, mean, sigma)
            self.calibrator_ = ConformalCalibrator(normalized=True).fit(
                worst, np.zeros_like(worst), np.ones_like(worst)
            )
            return self
        self.calibrator_ = ConformalCalibrator(normalized=True).fit(
            y_cal.reshape(-1), mean.reshape(-1), sigma.reshape(-1)
        )
        return self

    def _check(self, X, fitted: bool = True) -> np.ndarray:
        if not hasattr(self, "calibrator_" if fitted else "net_"):
            raise SctkError("This model is not fitted yet; call fit() first.")
        X = as_fields(X)
        if X.shape[1:] != self.shape_:
            raise SctkError(
                f"X has fields of shape {list(X.shape[1:])}; the model was trained on "
                f"{list(self.shape_)}."
            )
        return X

    def _mean_sigma(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, physics = self._tensors(X)
        self.net_.eval()
        with torch.no_grad():
            mean, log_sigma = self._forward(features, physics)
        return (
            mean.double().numpy() * self.scale_,
            np.exp(log_sigma.double().numpy()) * self.scale_,
        )

    def predict(self, X) -> np.ndarray:
        with _torch_threads(self.threads):
            return self._mean_sigma(self._check(X))[0]

    def predict_interval(self, X, alpha: float = 0.1) -> dict[str, np.ndarray]:
        """mean, lower, upper, sigma (fields like X) and psi (one per field)."""
        X = self._check(X)
        with _torch_threads(self.threads):
            mean, sigma = self._mean_sigma(X)
        lower, upper = self.calibrator_.interval(mean, sigma, alpha)
        field = torch.as_tensor(mean / self.scale_)
        confidence = psi(
            r_cog(field, self.dx, self._dy),
            r_eff(field, self.dx, self._dy),
            self.beta,
            self.lambda1_,
            self.lambda2_,
        )
        return {
            "mean": mean,
            "lower": lower.reshape(mean.shape),
            "upper": upper.reshape(mean.shape),
            "sigma": sigma,
            "psi": confidence.numpy().astype(np.float64),
        }
