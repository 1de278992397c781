"""Product-key memory (PKM) and PEER: against a naive reference that scores every slot, the
retrieval's exactness, the accounting, sparse updates, and the model around them."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moelab.config import MemoryConfig, ModelConfig, MoEConfig, RunConfig, TrainConfig, resolve
from moelab.errors import ConfigError
from moelab.models import Transformer, count_params
from moelab.models.memory import PEER, ProductKeyMemory
from moelab.models.params import count_module
from moelab.training import clip_gradients, make_optimizer
from tests.conftest import small_config

D = 16


def memory_cfg(**kw) -> MemoryConfig:
    return MemoryConfig(**({"kind": "pkm", "n_keys": 8, "heads": 2, "top_k": 3, "key_dim": 8} | kw))


def naive_read(layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every one of the N slots scored from the query and sub-keys written out by hand; exact top-k."""
    cfg = layer.cfg
    q = (x @ layer.retrieval.query.weight.T).view(x.shape[0], cfg.heads, cfg.key_dim)
    q = q * torch.rsqrt(q.square().mean(-1, keepdim=True) + torch.finfo(q.dtype).eps) * layer.retrieval.query_norm.weight
    half = cfg.key_dim // 2
    keys = layer.retrieval.keys  # [H, 2, n, c/2]
    s1 = torch.einsum("thc,hnc->thn", q[..., :half], keys[:, 0])
    s2 = torch.einsum("thc,hnc->thn", q[..., half:], keys[:, 1])
    every_slot = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).flatten(-2)  # [T, H, N], slot i * n + j
    top = every_slot.topk(cfg.top_k, dim=-1)
    return top.values.softmax(-1), top.indices


def naive_pkm(layer: ProductKeyMemory, x: torch.Tensor) -> torch.Tensor:
    weights, slots = naive_read(layer, x)
    return torch.einsum("thk,thkd->td", weights, layer.values[slots])


def naive_peer(layer: PEER, x: torch.Tensor) -> torch.Tensor:
    weights, slots = naive_read(layer, x)
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for h in range(layer.cfg.heads):
            for w, s in zip(weights[t, h], slots[t, h]):
                y[t] = y[t] + w * F.gelu(layer.down[s] @ x[t]) * layer.up[s]
    return y


@pytest.mark.parametrize("cls, naive", [(ProductKeyMemory, naive_pkm), (PEER, naive_peer)])
@pytest.mark.parametrize("sparse", [False, True])
def test_memory_layers_equal_the_naive_reference_in_outputs_and_gradients(cls, naive, sparse):
    torch.manual_seed(0)
    cfg = memory_cfg(kind="pkm" if cls is ProductKeyMemory else "peer")
    layer = cls(D, cfg).double()
    with torch.no_grad():  # larger than the initial scale, so every term matters
        for table in layer.tables():
            table.normal_()
    layer.sparse = sparse
    x = torch.randn(2, 5, D, dtype=torch.double, requires_grad=True)
    probe = torch.randn(2, 5, D, dtype=torch.double)

    y = layer(x)
    (y * probe).sum().backward()
    got = {"x": x.grad.clone()} | {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone()
                                   for n, p in layer.named_parameters()}
    if sparse:
        assert all(t.grad.is_sparse for t in layer.tables())
    x.grad = None
    layer.zero_grad()

    expected_y = naive(layer, x.view(-1, D)).view_as(x)
    (expected_y * probe).sum().backward()
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(got["x"], x.grad)
    for name, p in layer.named_parameters():
        torch.testing.assert_close(got[name], p.grad.to_dense() if p.grad.is_sparse else p.grad, msg=name)


def test_product_key_top_k_is_the_exact_top_k_over_every_slot():
    """The k best sums s1[i] + s2[j] always lie among the k x k candidates, so without ties the
    product-key search returns exactly the top k of all N slots, in order."""
    torch.manual_seed(1)
    layer = ProductKeyMemory(D, memory_cfg(n_keys=32, top_k=8)).double()
    x = torch.randn(2000, D, dtype=torch.double)
    scores, slots = layer.retrieval(x)
    exact_weights, exact_slots = naive_read(layer, x)
    assert torch.equal(slots, exact_slots)
    torch.testing.assert_close(scores.softmax(-1), exact_weights)


def test_with_ties_only_which_of_the_equal_slots_is_read_can_differ():
    """The one way the product search and the exact search can differ: ties. With every
    first-half score equal, four slots share the best score; the product search reads two of
    them (from the first-half sub-keys it kept), the exact search may pick another two: the
    scores read are the same."""
    cfg = memory_cfg(n_keys=4, heads=1, top_k=2, key_dim=2)
    layer = ProductKeyMemory(1, cfg)
    with torch.no_grad():
        layer.retrieval.query.weight.fill_(1.0)
        layer.retrieval.keys[0, 0] = torch.ones(4, 1)  # every first-half score ties
        layer.retrieval.keys[0, 1] = torch.tensor([[4.0], [3.0], [2.0], [1.0]])
    scores, slots = layer.retrieval(torch.ones(1, 1))
    exact_weights, exact_slots = naive_read(layer, torch.ones(1, 1))
    best = {i * 4 + 0 for i in range(4)}  # (i, j = 0) for every i: the four slots of the best score
    assert set(slots.flatten().tolist()) <= best and set(exact_slots.flatten().tolist()) <= best
    torch.testing.assert_close(scores.softmax(-1), exact_weights)


@pytest.mark.slow
def test_trained_queries_retrieve_the_exact_top_k(tmp_path):
    """On a trained model's own queries (float32, real paragraphs) the product search agrees with
    scoring every slot for every token and head."""
    from moelab.run import execute
    from moelab.runs.weights import load_run

    cfg = small_config()
    cfg.model.memory = memory_cfg(n_keys=16, heads=2, top_k=4, key_dim=16)
    cfg.model.memory.layers = [1]
    execute(resolve(cfg), tmp_path)
    _, kb, model = load_run(tmp_path)
    layer = model.memory_modules()[0]
    hidden = []
    hook = layer.register_forward_pre_hook(lambda m, args: hidden.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        model(kb.training_batch(np.arange(kb.n_people), np.random.default_rng(0)).inputs)
    hook.remove()
    x = hidden[0]
    _, slots = layer.retrieval(x)
    _, exact = naive_read(layer, x)
    assert x.shape[0] * layer.cfg.heads > 1000
    assert (slots == exact).all(-1).float().mean() == 1.0


@pytest.mark.parametrize("kind", ["pkm", "peer"])
def test_accounting_equals_a_hand_count_and_the_value_part_does_not_grow_with_n(kind):
    d, V, H, k, c = 32, 40, 4, 8, 16
    counts = {}
    for n in (16, 64, 256):
        mem = MemoryConfig(kind=kind, layers=[1], n_keys=n, heads=H, top_k=k, key_dim=c)
        cfg = resolve(RunConfig(model=ModelConfig(d_model=d, n_layers=2, n_heads=4, d_ff=64, mlp="gelu", memory=mem))).model
        p = count_params(cfg, V)
        row = d * (2 if kind == "peer" else 1)
        retrieval = d * H * c + c + H * 2 * n * (c // 2)  # query, its norm, every sub-key
        hand_total = (V * d + 2 * 4 * d * d  # the tied embedding; two layers of q, k, v, o
                      + 5 * d  # four block norms and the final norm
                      + 2 * d * 64  # layer 0's GELU MLP (layer 1's is replaced)
                      + retrieval + n * n * row)
        assert p.total == hand_total
        assert p.active == hand_total - n * n * row + H * k * row
        assert count_module(Transformer(cfg, V)) == (p.total, p.active)
        counts[n] = p
    # the rows read do not depend on N; only the sub-keys (2 n per head, all scored) grow, as sqrt(N)
    assert len({p.active - H * n * c for n, p in counts.items()}) == 1
    assert counts[256].active - counts[16].active == H * (256 - 16) * c


def test_sparse_updates_touch_only_the_rows_read():
    torch.manual_seed(0)
    cfg = resolve(RunConfig(model=ModelConfig(d_model=D, n_layers=1, n_heads=2, d_ff=32, memory=memory_cfg(n_keys=32)),
                            train=TrainConfig(weight_decay=0.1)))
    model = Transformer(cfg.model, 30)
    optimizer = make_optimizer(model, cfg.train, torch.device("cpu"))
    values = model.memory_modules()[0].values
    assert [type(o).__name__ for o in optimizer.optimizers] == ["AdamW", "SparseAdam"]
    for step in range(3):
        before = values.detach().clone()
        tokens = torch.randint(0, 30, (2, 6))
        logits, _ = model(tokens)
        optimizer.zero_grad()
        F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
        read = torch.zeros(values.shape[0], dtype=torch.bool)
        read[values.grad.coalesce().indices()[0]] = True
        clip_gradients(list(model.parameters()), 1.0)
        optimizer.step()
        changed = (values.detach() != before).any(-1)
        assert torch.equal(changed, read), step  # no decay, no stale momentum on rows not read
        assert 0 < read.sum() < values.shape[0]


def test_dense_memory_optimizer_updates_rows_not_read():
    torch.manual_seed(0)
    cfg = resolve(RunConfig(model=ModelConfig(d_model=D, n_layers=1, n_heads=2, d_ff=32, memory=memory_cfg(n_keys=32)),
                            train=TrainConfig(memory_optimizer="dense", memory_lr_mult=0.5)))
    model = Transformer(cfg.model, 30)
    optimizer = make_optimizer(model, cfg.train, torch.device("cpu"))
    values = model.memory_modules()[0].values
    group = next(g for g in optimizer.param_groups if any(p is values for p in g["params"]))
    assert (group["lr_mult"], group["weight_decay"]) == (0.5, 0.0)
    snapshots = []
    for _ in range(2):
        tokens = torch.randint(0, 30, (2, 6))
        logits, _ = model(tokens)
        optimizer.zero_grad()
        F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
        assert not values.grad.is_sparse
        read = values.grad.abs().sum(-1) > 0
        snapshots.append(values.detach().clone())
        optimizer.step()
    assert ((values.detach() != snapshots[-1]).any(-1) & ~read).any()  # momentum moves rows not read now


def test_sparse_clipping_matches_dense_clipping():
    torch.manual_seed(0)
    layer = ProductKeyMemory(D, memory_cfg())
    x = torch.randn(7, D)
    grads = {}
    for sparse in (False, True):
        layer.zero_grad()
        layer.sparse = sparse
        (layer(x) * 50).square().sum().backward()
        norm = clip_gradients(list(layer.parameters()), 0.5)
        grads[sparse] = (float(norm), {n: p.grad.to_dense() for n, p in layer.named_parameters()})
    assert grads[True][0] == pytest.approx(grads[False][0], rel=1e-5)
    for name, g in grads[False][1].items():
        torch.testing.assert_close(grads[True][1][name], g)
    assert sum(g.square().sum() for g in grads[True][1].values()).sqrt() == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("fields, message", [
    ({"top_k": 9, "n_keys": 8}, "model.memory.top_k = 9 exceeds model.memory.n_keys = 8"),
    ({"key_dim": 7}, "model.memory.key_dim = 7: must be even"),
    ({"layers": [2]}, "model.memory.layers = \\[2\\]"),
    ({"layers": [0, 0]}, "distinct layer indices"),
    ({"kind": "kv"}, "model.memory.kind = 'kv'"),
    ({"placement": "after"}, "model.memory.placement = 'after'"),
])
def test_bad_memory_configs_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        resolve(RunConfig(model=ModelConfig(n_layers=2, memory=dataclasses.replace(memory_cfg(), **fields))))


def test_memory_with_experts_is_refused():
    with pytest.raises(ConfigError, match="memory layers or routed experts, not both"):
        resolve(RunConfig(model=ModelConfig(moe=MoEConfig(n_experts=4), memory=memory_cfg())))


@pytest.mark.slow
def test_a_memory_model_trains_and_reports_its_memory(tmp_path):
    from moelab.evaluation.quantization import quantize_model
    from moelab.models.hf import check_exportable
    from moelab.probe.backends import LabBackend
    from moelab.probe.prompts import ProbeSettings
    from moelab.probe.runner import run_probe
    from moelab.probe.tasks import knowledge_task
    from moelab.run import execute
    from moelab.runs.weights import load_run
    from moelab.sweeps.grid import run_label

    cfg = small_config()
    cfg.model.memory = memory_cfg(kind="peer", n_keys=16, heads=2, top_k=4, key_dim=16, placement="beside")
    cfg = resolve(cfg)
    metrics = execute(cfg, tmp_path)
    assert (metrics["memory_kind"], metrics["memory_optimizer"], metrics["memory_slots"]) == ("peer", "sparse", 256)
    usage = metrics["memory"]
    assert [u["layer"] for u in usage] == [0, 1] and all(u["kind"] == "peer" for u in usage)
    assert all(0 < u["slot_usage"] <= 1 and u["dead_slots"] == 256 - round(256 * u["slot_usage"]) for u in usage)
    assert all(0 < u["usage_entropy_bits"] <= u["max_usage_entropy_bits"] == 8 for u in usage)
    assert metrics["p_active"] < metrics["p_total"]
    assert run_label(cfg, {}) == "peer N=256 h=2 k=4 +d_ff=64"

    probed = run_probe(LabBackend(tmp_path), knowledge_task(load_run(tmp_path)[1]), tmp_path / "probe", ProbeSettings())
    assert probed["answerable"]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)  # greedy = recall

    _, kb, model = load_run(tmp_path)
    quantized = quantize_model(model, 8)
    assert not torch.equal(quantized.memory_modules()[0].up, model.memory_modules()[0].up)
    with pytest.raises(ConfigError, match="model.memory.kind = 'peer'"):
        check_exportable(cfg, model)
