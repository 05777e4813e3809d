"""Test configuration: every test runs in float64 (gradient checks need it) and deterministically."""

import jax

jax.config.update("jax_enable_x64", True)
