"""The Hybrid UQ engine: physics + neural residual with heteroscedastic uncertainty,
calibrated by split conformal prediction."""
