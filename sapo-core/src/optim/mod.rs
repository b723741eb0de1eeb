//! Optimizers, learning-rate schedules and gradient clipping (in progress).
