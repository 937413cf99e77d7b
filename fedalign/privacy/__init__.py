"""Differential privacy for fedalign: the statistics mechanism, accounting, DP-SGD.

Two mechanisms with two different units of privacy live here.

**1. Gaussian mechanism on the released structure statistics** (client level,
:class:`StatisticsMechanism`). Per round a client releases L vectors of shape
``[E]``: for every edge ``u -> v`` of the shared alignment graph and every
hidden layer l, ``p_l(u|v)``.

* Unit of privacy: the client's *whole* local dataset.
* Neighbouring relation (replace-one-client): two datasets D, D' of the same
  client are neighbours when they differ *arbitrarily* (any features, labels,
  edges, any number of nodes or graphs). Only the following are treated as
  public and are not protected: the alignment graph's ``edge_index`` (hence E
  and each edge's target node, which the post-processing uses), L, the clip
  norm C, the noise multiplier sigma, and the number of releases.
* Clipping: scope ``"release"`` scales the concatenation of all L layers,
  ``[L * E]``, to L2 norm <= C; scope ``"layer"`` scales each layer's ``[E]``
  vector to norm <= C, so the whole release has norm <= C * sqrt(L).
* Sensitivity: both neighbouring releases lie in that ball and are
  non-negative (probabilities; clipping scales, so they stay non-negative).
  For such x, y, <x, y> >= 0, so ||x - y||^2 = ||x||^2 + ||y||^2 - 2 <x, y>
  <= 2 C^2: the L2 sensitivity is ``sqrt(2) C`` for scope ``"release"`` and
  ``sqrt(2) C sqrt(L)`` for scope ``"layer"`` (``2 C`` and ``2 C sqrt(L)``
  for signed vectors, ``nonnegative=False``;
  :attr:`StatisticsMechanism.sensitivity`).
* Noise: i.i.d. ``N(0, (sigma C)^2)`` on every coordinate (both scopes).
* Accounting: a Gaussian mechanism with noise std s and sensitivity S is
  analysed by the accountants as noise multiplier ``s / S``. Hence the
  multiplier to record is ``sigma C / sensitivity``: ``sigma / sqrt(2)`` for scope
  ``"release"`` and ``sigma / sqrt(2 L)`` for scope ``"layer"``
  (:attr:`StatisticsMechanism.effective_noise_multiplier`). Every release is
  recorded with sample rate 1 (the whole dataset is used every time):
  ``ledger.record(mechanism.effective_noise_multiplier)``. Rounds compose
  adaptively, which RDP and PRV accounting both allow.
* Post-processing: negatives are clamped to 0 and each target node's in-edge
  group is renormalised to sum 1 (a group that is all zero becomes uniform).
  It reads only the noisy vector and the public targets, so it keeps the DP
  guarantee. Since renormalisation undoes any positive scaling, C only sets the
  noise scale relative to the clipped signal, not the shape of the output.
* sigma = 0 (no noise, epsilon = infinity) is never a silent default: the
  constructor rejects ``noise_multiplier=0`` unless ``clip_only=True`` is passed,
  which names the no-privacy path explicitly; its effective multiplier is 0 and
  a :class:`PrivacyLedger` records it as epsilon = infinity.
* The guarantee covers the statistics only: anything else a client sends that
  depends on its data (weights, metrics) needs its own accounting. Noise comes
  from the OS CSPRNG (:mod:`fedalign.noise`: no seed to search), each
  Gaussian the halved sum of four (Opacus' ``secure_mode``); Mironov's (2012)
  attack on the float rounding of the noisy release is not mitigated.

**1b. The same mechanism, distributed, under secure aggregation** (``privacy.secure_aggregation``):
every client adds only a share of the noise (std ``sigma C / sqrt(n)``) and the server learns only
the sum of the shares, whose honest part carries ``sigma C``; each round is recorded with the same
multiplier. Trust assumptions and the argument: :mod:`fedalign.aggregation`.

**2. DP-SGD for local training, per graph** (:class:`DPSGDTrainer`), for
multi-graph datasets such as PPI where each graph is one sample.

* Unit of privacy: one graph. Neighbouring relation: add/remove one graph
  (the relation of Opacus' analysis of the Poisson-subsampled Gaussian).
* Each step samples every graph independently with probability q (Poisson
  sampling from the OS CSPRNG), clips each graph's gradient to L2 norm
  ``max_grad_norm``, adds ``N(0, (sigma max_grad_norm)^2)`` noise and records
  ``(sigma, q)`` into a :class:`PrivacyLedger`, which is exactly what the
  RDP/PRV accountants assume.
* Statistics computed by a DP-SGD-trained model are DP by post-processing,
  *provided the statistics read only the trained parameters and public inputs*
  (a public alignment graph). Such a client accounts its releases through its
  DP-SGD ledger and need not add statistic noise. Its guarantee is then per
  graph, weaker than the client-level guarantee of the statistics mechanism.
  If the statistics are computed on the client's private graphs, they are not
  post-processing and need the statistics mechanism on top.
* Single-graph (transductive) node classification is not supported: a node's
  features and label reach its neighbours' gradients through message passing,
  so clipping per-node gradients does not bound one node's influence without
  bounded-degree neighbourhood sampling (Daigavane et al., 2021). See
  :func:`require_per_graph_samples`.
"""

from .accounting import ACCOUNTANTS, PrivacyLedger, noise_multiplier_for_epsilon
from .dp_sgd import DPSGDTrainer, DPSGDUnsupported, per_graph_gradients, require_per_graph_samples
from .labels import flip_probability, keep_probability, randomised_response
from .mechanism import CLIP_SCOPES, StatisticsMechanism, clip_to_norm, project_to_distributions

__all__ = [
    "ACCOUNTANTS",
    "CLIP_SCOPES",
    "DPSGDTrainer",
    "DPSGDUnsupported",
    "PrivacyLedger",
    "StatisticsMechanism",
    "clip_to_norm",
    "flip_probability",
    "keep_probability",
    "noise_multiplier_for_epsilon",
    "randomised_response",
    "per_graph_gradients",
    "project_to_distributions",
    "require_per_graph_samples",
]
