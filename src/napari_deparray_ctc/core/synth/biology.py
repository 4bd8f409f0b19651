"""What the synthetic cells are: subtypes, sizes, nuclei, marker levels (see docs/synthetic_data.md)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["LEUKOCYTES", "SUBTYPES", "draw_biology", "draw_sample_biology"]

#: Subtypes per class and their relative frequencies among that class.
SUBTYPES: dict[str, dict[str, float]] = {
    "WBC": {"lymphocyte": 0.45, "neutrophil": 0.35, "monocyte": 0.20},
    "CTC": {"ctc": 0.85, "ctc_binucleate": 0.15},
}


def _truncated_normal(
    rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float
) -> float:
    for _ in range(100):
        value = rng.normal(mean, sd)
        if lo <= value <= hi:
            return float(value)
    return float(np.clip(mean, lo, hi))


def _truncated_lognormal(
    rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float
) -> float:
    for _ in range(100):
        value = median * math.exp(rng.normal(0.0, sigma))
        if lo <= value <= hi:
            return float(value)
    return float(np.clip(median, lo, hi))


#: How each leukocyte subtype's parameters are drawn, in drawing order (the order fixes the
#: cells a seed gives). A spec is a constant, or ``(kind, *arguments)``: ``tnormal`` (mean,
#: sd, low, high), ``uniform`` (low, high), ``chance`` (p: 1 with that probability, else 0),
#: ``integers`` (low, high exclusive), ``lognormal`` (median, sigma).
LEUKOCYTES: dict[str, dict[str, Any]] = {
    "lymphocyte": {
        "diameter_um": ("tnormal", 9.0, 1.1, 7.0, 13.0),
        "nc_ratio": ("uniform", 0.72, 0.88),
        "irregularity": ("uniform", 0.005, 0.03),
        "nucleus_irregularity": ("uniform", 0.01, 0.04),
        "n_blebs": ("chance", 0.05),
        "ploidy": 2.0,
        "n_nucleoli": ("chance", 0.15),
        "ri_cytoplasm": ("uniform", 0.026, 0.036),
        "granules": ("integers", 0, 12),
        "vacuoles": ("integers", 0, 3),
        "ck": ("lognormal", 0.02, 0.5),
        "cd45": ("lognormal", 1.0, 0.3),
    },
    "neutrophil": {
        "diameter_um": ("tnormal", 10.8, 1.0, 8.5, 14.0),
        "nc_ratio": ("uniform", 0.5, 0.65),
        "irregularity": ("uniform", 0.01, 0.045),
        "nucleus_irregularity": ("uniform", 0.02, 0.06),
        "n_blebs": ("chance", 0.15),
        "ploidy": 2.0,
        "n_lobes": ("integers", 3, 6),
        "n_nucleoli": 0,
        "ri_cytoplasm": ("uniform", 0.028, 0.038),
        "granules": ("integers", 50, 120),
        "vacuoles": ("integers", 0, 3),
        "ck": ("lognormal", 0.035, 0.5),
        "cd45": ("lognormal", 0.45, 0.35),
    },
    "monocyte": {
        "diameter_um": ("tnormal", 12.6, 1.5, 10.0, 17.0),
        "nc_ratio": ("uniform", 0.55, 0.72),
        "irregularity": ("uniform", 0.015, 0.06),
        "nucleus_irregularity": ("uniform", 0.02, 0.07),
        "n_blebs": ("integers", 0, 3),
        "ploidy": 2.0,
        "n_nucleoli": ("chance", 0.3),
        "ri_cytoplasm": ("uniform", 0.024, 0.034),
        "granules": ("integers", 10, 40),
        "vacuoles": ("integers", 2, 10),
        "ck": ("lognormal", 0.06, 0.6),
        "cd45": ("lognormal", 0.7, 0.3),
    },
}


def _draw(rng: np.random.Generator, spec: Any) -> Any:
    """One parameter drawn as ``spec`` says (see :data:`LEUKOCYTES`)."""
    if not isinstance(spec, tuple):
        return spec
    kind, *args = spec
    if kind == "tnormal":
        return _truncated_normal(rng, *args)
    if kind == "uniform":
        return rng.uniform(*args)
    if kind == "chance":
        return int(rng.random() < args[0])
    if kind == "integers":
        return int(rng.integers(*args))
    if kind == "lognormal":
        return rng.lognormal(math.log(args[0]), args[1])
    raise ValueError(f"unknown kind of draw {kind!r}")


def draw_sample_biology(
    rng: np.random.Generator, jitter_rng: np.random.Generator, jitter: float = 0.0
) -> dict[str, float]:
    """Factors shared by the cells of one sample (patient).

    ``rng`` draws the documented per-sample variation (CTC size, CK level); with
    ``jitter > 0``, ``jitter_rng`` also moves the biology itself (leukocyte sizes, N/C
    ratios, CTC atypia), for pretraining that must not learn one fixed class boundary.
    """
    factors = {
        "ctc_size_factor": float(math.exp(rng.normal(0, 0.08))),
        "ck_factor": float(math.exp(rng.normal(0, 0.3))),
        "wbc_size_factor": 1.0,
        "nc_factor": 1.0,
        "atypia_factor": 1.0,
    }
    if jitter > 0:
        factors["ctc_size_factor"] *= float(math.exp(jitter_rng.normal(0, 0.1 * jitter)))
        factors["wbc_size_factor"] = float(math.exp(jitter_rng.normal(0, 0.08 * jitter)))
        factors["nc_factor"] = float(math.exp(jitter_rng.normal(0, 0.06 * jitter)))
        factors["atypia_factor"] = float(math.exp(jitter_rng.normal(0, 0.3 * jitter)))
    return factors


def draw_biology(
    rng: np.random.Generator, subtype: str, sample_bio: dict[str, float]
) -> dict[str, Any]:
    """Latent parameters of one cell of ``subtype`` (the table in docs/synthetic_data.md)."""
    p: dict[str, Any] = {"subtype": subtype}
    ellipticity = abs(rng.normal(0, 0.035))
    if subtype in LEUKOCYTES:
        p.update({name: _draw(rng, spec) for name, spec in LEUKOCYTES[subtype].items()})
    elif subtype in ("ctc", "ctc_binucleate"):
        atypia = min(1.0, float(rng.beta(2.0, 2.0)) * sample_bio.get("atypia_factor", 1.0))
        median = 16.0 if subtype == "ctc_binucleate" else 13.5
        sigma = 0.2 if subtype == "ctc_binucleate" else 0.24
        ck_low = bool(rng.random() < 0.12)
        p.update(
            atypia=atypia,
            diameter_um=_truncated_lognormal(
                rng, median * sample_bio["ctc_size_factor"], sigma, 8.5, 27.0
            ),
            nc_ratio=rng.uniform(0.55, 0.8),
            irregularity=0.008 + 0.055 * atypia * rng.uniform(0.3, 1.0),
            nucleus_irregularity=0.02 + 0.11 * atypia * rng.uniform(0.3, 1.0),
            n_blebs=int(rng.poisson(1.5 * atypia)),
            ploidy=float(rng.uniform(2.0, 5.0)),
            n_nucleoli=int(rng.poisson(0.4 + 2.2 * atypia)),
            ri_cytoplasm=rng.uniform(0.024, 0.036),
            granules=int(rng.integers(0, 25)),
            vacuoles=int(rng.integers(0, 6)),
            ck_low=ck_low,
            ck=rng.lognormal(math.log(0.08 if ck_low else 0.9), 0.5) * sample_bio["ck_factor"],
            cd45=rng.lognormal(math.log(0.015), 0.5),
        )
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"unknown subtype {subtype!r}")
    if not subtype.startswith("ctc"):
        p["diameter_um"] *= sample_bio.get("wbc_size_factor", 1.0)
    p["nc_ratio"] = float(np.clip(p["nc_ratio"] * sample_bio.get("nc_factor", 1.0), 0.35, 0.92))
    p["ellipticity"] = ellipticity
    p["ri_nucleus_rel"] = rng.normal(-0.006, 0.004)  # nucleus vs cytoplasm (Schürmann 2016)
    p["flatten"] = rng.uniform(0.75, 0.95)
    p["edge_softness_um"] = rng.uniform(0.3, 0.7)
    return p
