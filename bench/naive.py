"""A straightforward in-process implementation of the Alignahead procedure: the speed baseline.

This is how the method reads in the paper, written the obvious way with
plain PyTorch Geometric, and it is what :mod:`bench.speed` compares
fedalign against:

* students are ``GCNConv`` stacks run on ``edge_index`` (PyG's default
  ``normalize=True``, ``cached=False``: the symmetric normalisation with self
  loops is recomputed, and messages gathered and scattered, at every call);
* the structure statistics of a layer are the original Alignahead code's:
  ``softmax_{in-edges of v}(exp(-(h[src] - h[dst]).abs().sum(-1) / tau))`` on
  each hidden layer's pre-activation output, with PyG's scatter softmax,
  autograd through every ``[E, d]`` intermediate, and the KL summed over a
  node's in-edges and averaged over all nodes;
* nothing is cached: at **every training step** of the student, each frozen
  peer is run forward again (eval mode, no grad) to get its statistics.

Same method and hyper-parameters as fedalign's ``alternating`` schedule in the
paper's ``replicate`` setting (every student sees the whole training graph,
which is also the alignment graph): in round r, student (r - 1) mod K trains
``local_epochs`` epochs on task loss + a * (1/#peers) * sum_peers sum_pairs
KL(peer || student) with the alignahead pairs (l+1 <- l, 1 <- L), then is
evaluated. The layer names match fedalign's ``GCNStudent``, so the same
weights load into both (``load_weights``); with equal weights and equal seeds
both compute the same losses and take the same steps
(``tests/test_benchmarks_smoke.py`` checks it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import scatter, softmax


def _seed(*parts: int) -> int:
    """Same derivation as fedalign's per-(seed, client, round) seeds, so dropout masks can match."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class NaiveGCN(nn.Module):
    """L hidden ``GCNConv`` layers (activation, dropout) and a ``GCNConv`` output layer, on ``edge_index``.

    The activation is ReLU by default, as in the original code's GCN students and fedalign's default for
    ``model.arch: gcn``; ``activation="elu"`` matches a config that sets ``model.activation: elu``.

    Returns the logits and each hidden layer's output before its activation.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_layers: int,
        hidden_dim: int,
        dropout: float,
        activation: str = "relu",
    ):
        super().__init__()
        activations: dict[str, Callable[..., Tensor]] = {"relu": nn.functional.relu, "elu": nn.functional.elu}
        self.activation = activations[activation]
        dims = [in_channels] + [hidden_dim] * hidden_layers
        self.layers = nn.ModuleList(GCNConv(dims[i], dims[i + 1]) for i in range(hidden_layers))
        self.output = GCNConv(hidden_dim, num_classes)
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, list[Tensor]]:
        hiddens, h = [], x
        for layer in self.layers:
            z = layer(h, edge_index)
            hiddens.append(z)
            h = nn.functional.dropout(self.activation(z), p=self.dropout, training=self.training)
        return self.output(h, edge_index), hiddens


def naive_log_probs(h: Tensor, edge_index: Tensor, tau: float) -> Tensor:
    """``log p(u|v)`` per edge: scatter softmax of ``exp(-||h_u - h_v||_1 / tau)`` over v's in-edges."""
    src, dst = edge_index
    distance = (h[src] - h[dst]).abs().sum(dim=-1)
    return softmax(torch.exp(-distance / tau), dst, num_nodes=h.size(0)).log()


def naive_kl(peer_log_probs: Tensor, student_log_probs: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    """KL(peer || student) summed over each node's in-edges, averaged over all nodes."""
    p = peer_log_probs.exp()
    per_node = scatter(p * (peer_log_probs - student_log_probs), dst, dim=0, dim_size=num_nodes, reduce="sum")
    return per_node.mean()


def alignahead_pairs(depth: int) -> list[tuple[int, int]]:
    """(student layer, peer layer), 1-based, for equal depths: 1 <- L, l+1 <- l."""
    return [(1, depth)] + [(layer + 1, layer) for layer in range(1, depth)]


class NaiveAlignahead:
    """K students trained with the alternating schedule, peers re-run at every step.

    Args:
        x, edge_index, y: the graph (float [N, F], long [2, E], long [N]).
        train_mask, val_mask, test_mask: bool [N].
        num_classes: C.
        Remaining keyword arguments mirror fedalign's config keys (``model.*``,
        ``train.*``, ``align.*``, ``seed``).
    """

    def __init__(
        self,
        x: Tensor,
        edge_index: Tensor,
        y: Tensor,
        train_mask: Tensor,
        val_mask: Tensor,
        test_mask: Tensor,
        num_classes: int,
        *,
        num_students: int = 2,
        hidden_layers: int = 4,
        hidden_dim: int = 64,
        dropout: float = 0.0,
        lr: float = 0.005,
        weight_decay: float = 0.0,
        tau: float = 100.0,
        weight: float = 1.0,
        local_epochs: int = 1,
        seed: int = 0,
        activation: str = "relu",
    ) -> None:
        self.x, self.edge_index, self.y = x, edge_index, y
        self.train_mask, self.val_mask, self.test_mask = train_mask, val_mask, test_mask
        self.tau, self.weight, self.local_epochs, self.seed = tau, weight, local_epochs, seed
        self.depth = hidden_layers
        self.students = []
        for _ in range(num_students):
            torch.manual_seed(_seed(seed))  # shared initialisation, as fedalign's default model.init
            self.students.append(NaiveGCN(x.size(1), num_classes, hidden_layers, hidden_dim, dropout, activation))
        self.optimizers = [torch.optim.Adam(s.parameters(), lr=lr, weight_decay=weight_decay) for s in self.students]

    @classmethod
    def from_split(cls, train, val, test, num_classes: int, **kwargs) -> NaiveAlignahead:
        """From fedalign ``GraphSplit``s of one graph (``replicate``: train.graph is the alignment graph)."""
        g = train.graph
        return cls(g.x, g.edge_index, g.y, train.mask, val.mask, test.mask, num_classes, **kwargs)

    def load_weights(self, state_dicts: list[dict]) -> None:
        """Load each student's weights (e.g. fedalign ``GCNStudent.state_dict()``s: the names match)."""
        for student, state in zip(self.students, state_dicts, strict=True):
            student.load_state_dict(state)

    def peer_log_probs(self, j: int) -> list[Tensor]:
        """Peer j's statistics, recomputed from scratch (eval mode, no grad)."""
        peer = self.students[j]
        was_training = peer.training
        peer.eval()
        with torch.no_grad():
            _, hiddens = peer(self.x, self.edge_index)
            out = [naive_log_probs(h, self.edge_index, self.tau) for h in hiddens]
        peer.train(was_training)
        return out

    def alignment_loss(self, i: int, hiddens: list[Tensor]) -> Tensor:
        """Student i's alignment loss; every peer is run forward again."""
        dst, n = self.edge_index[1], self.x.size(0)
        student = [naive_log_probs(h, self.edge_index, self.tau) for h in hiddens]
        peers = [j for j in range(len(self.students)) if j != i]
        total = hiddens[0].new_zeros(())
        for j in peers:
            peer = self.peer_log_probs(j)
            for s_layer, p_layer in alignahead_pairs(self.depth):
                total = total + naive_kl(peer[p_layer - 1], student[s_layer - 1], dst, n)
        return total / max(len(peers), 1)

    def train_step(self, i: int) -> tuple[float, float]:
        """One epoch of student i (full batch): (task loss, alignment loss)."""
        model, optimizer = self.students[i], self.optimizers[i]
        model.train()
        optimizer.zero_grad()
        logits, hiddens = model(self.x, self.edge_index)
        task = nn.functional.cross_entropy(logits[self.train_mask], self.y[self.train_mask])
        align = self.alignment_loss(i, hiddens)
        (task + self.weight * align).backward()
        optimizer.step()
        return task.item(), align.item()

    @torch.no_grad()
    def evaluate(self, i: int) -> dict[str, float]:
        model = self.students[i]
        model.eval()
        logits, _ = model(self.x, self.edge_index)
        pred = logits.argmax(dim=-1)
        return {
            "val_metric": (pred[self.val_mask] == self.y[self.val_mask]).float().mean().item(),
            "test_metric": (pred[self.test_mask] == self.y[self.test_mask]).float().mean().item(),
            "val_loss": nn.functional.cross_entropy(logits[self.val_mask], self.y[self.val_mask]).item(),
        }

    def train_round(self, round_number: int) -> dict[str, float]:
        """Round r of the alternating schedule: student (r - 1) mod K trains, then is evaluated.

        Returns the metrics plus ``client``, ``train_seconds`` (the local epochs) and
        ``evaluate_seconds``.
        """
        i = (round_number - 1) % len(self.students)
        torch.manual_seed(_seed(self.seed, i, round_number))
        start = time.perf_counter()
        for _ in range(self.local_epochs):
            task, align = self.train_step(i)
        trained = time.perf_counter()
        metrics = self.evaluate(i)
        done = time.perf_counter()
        return {
            "client": i,
            "task_loss": task,
            "align_loss": align,
            **metrics,
            "train_seconds": trained - start,
            "evaluate_seconds": done - trained,
        }


# ---------------------------------------------------------------- equivalence with fedalign


def compare_with_fedalign(clients: dict, naive: NaiveAlignahead, trainer: int = 0) -> dict[str, float]:
    """Same weights, same data: fedalign's and the naive alignment/task losses and gradients.

    ``clients``: fedalign ``Student``s (``replicate`` partition) whose weights
    ``naive`` holds. Both models in eval mode (no dropout); fedalign's peer
    statistics go through its own release path (float32 probabilities, then
    log), the naive peers are re-run. Returns both losses, their absolute
    differences and the largest absolute difference of the gradients of
    (task + a * alignment) with respect to the trainer's weights.
    """
    student = clients[trainer]
    targets = student.alignment_targets({j: c.statistics() for j, c in clients.items() if j != trainer})
    graph = student.alignment
    student.model.eval()
    student.model.zero_grad()
    logits, hiddens = student.model(graph.x, graph.edge_index)
    mask = student.train_split.mask
    fed_task = nn.functional.cross_entropy(logits[mask], graph.y[mask])
    fed_align = student.alignment_loss(logits, hiddens, targets)
    (fed_task + naive.weight * fed_align).backward()
    fed_grads = {n: p.grad.detach().clone() for n, p in student.model.named_parameters()}

    model = naive.students[trainer]
    model.eval()
    model.zero_grad()
    n_logits, n_hiddens = model(naive.x, naive.edge_index)
    naive_task = nn.functional.cross_entropy(n_logits[naive.train_mask], naive.y[naive.train_mask])
    naive_align = naive.alignment_loss(trainer, n_hiddens)
    (naive_task + naive.weight * naive_align).backward()
    grad_diff = max((p.grad - fed_grads[n]).abs().max().item() for n, p in model.named_parameters())
    grad_scale = max(g.abs().max().item() for g in fed_grads.values())
    student.model.zero_grad()
    model.zero_grad()
    return {
        "fedalign_align_loss": fed_align.item(),
        "naive_align_loss": naive_align.item(),
        "align_loss_abs_diff": abs(fed_align.item() - naive_align.item()),
        "fedalign_task_loss": fed_task.item(),
        "naive_task_loss": naive_task.item(),
        "task_loss_abs_diff": abs(fed_task.item() - naive_task.item()),
        "grad_max_abs_diff": grad_diff,
        "grad_max_abs": grad_scale,
    }
