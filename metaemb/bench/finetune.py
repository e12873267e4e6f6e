"""`metaemb bench finetune`: batched fine-tune vs a per-task loop vs this machine's GEMM rate.

Reference task: 32 samples, k = 3 steps, meta 64->128->32, global 96->256->128->1
(other_in = 64, no item embedding). Everything is measured in one run, on the same tasks:

  loop      one task at a time, learn2learn-style (clone θ_meta, k autograd steps, embed)
  vmap      torch.func: grad of a one-task loss, vmapped over a chunk of tasks
            (both from metaemb.research.reference_finetune)
  batched   models.finetune_embed: the hand-written kernel (models.kernel): the chunk's
            samples in shared GEMMs, a per-task [L, L] Gram matrix instead of a per-task
            first-layer weight
  autograd  the same batched problem through autograd (per-task weight copies, bmm), the
            path before the kernel; measured at the batched path's best chunk and threads
  GEMM      a large fp32 matmul: the rate this machine's BLAS reaches

--train measures Algorithm 2a's outer step instead (models.train's task loss and its backward,
128 tasks per batch, 24 support samples of 32): kernel vs autograd inner loop.

The machine may be shared: each rate is the best of several interleaved repeats (the batched
sweep, GEMM, loop and vmap in every repeat), so that a neighbour's burst does not count
against one side only.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

L, K, META_IN, OTHER_IN, HIDDEN, EMB, GLOBAL = 32, 3, 64, 64, 128, 32, (256, 128)



def flops_per_task() -> tuple[float, float]:
    """(reference, executed) matmul FLOPs for one task.

    reference: what the per-task loop computes — per step a full forward of both blocks,
    the backward through the global block to e and the backward of the meta block.
    executed: the kernel (models.kernel) computes the x_other part of the first global layer
    once (global is frozen) and only e's columns of that layer each step; no first-layer
    weight gradient: the first layer moves by the task's Gram matrix times its backward
    signal ([L, L] @ [L, hidden]); W2's last update is applied to the embedded row only."""
    meta_f = 2 * L * (META_IN * HIDDEN + HIDDEN * EMB)
    g_in = OTHER_IN + EMB
    glob_f = 2 * L * (g_in * GLOBAL[0] + GLOBAL[0] * GLOBAL[1] + GLOBAL[1])
    meta_b = 2 * L * (HIDDEN * EMB * 2 + META_IN * HIDDEN)  # dW2, dh, dW1
    ref = K * (meta_f + 2 * glob_f + meta_b) + 2 * (META_IN * HIDDEN + HIDDEN * EMB)
    deep = 2 * L * (GLOBAL[0] * GLOBAL[1] + GLOBAL[1])
    e_cols = 2 * L * EMB * GLOBAL[0]
    once = 2 * L * (OTHER_IN * GLOBAL[0] + META_IN * HIDDEN + L * META_IN)  # x_other part, U0, Gram
    per_step = 2 * L * HIDDEN * EMB * 2 + 2 * (e_cols + deep)  # e, the global block both ways, v = g W2
    between = 2 * L * HIDDEN * (EMB + L)  # W2's update, U += Gram @ V (before steps 1..k-1)
    last_row = 2 * L * HIDDEN * 2 + 2 * L * EMB + 2 * HIDDEN * EMB  # the embedded row's share of the last step
    executed = once + K * per_step + (K - 1) * between + last_row
    return float(ref), float(executed)


def make_tasks(n: int, seed: int = 0):
    from models.data import TaskBatch

    rng = np.random.default_rng(seed)
    return TaskBatch(
        x_meta=rng.normal(size=(n, L, META_IN)).astype(np.float32),
        x_other=rng.normal(size=(n, L, OTHER_IN)).astype(np.float32),
        item_ids=np.zeros((n, L), np.int64),
        labels=(rng.random((n, L)) < 0.5).astype(np.float32),
        lengths=np.full(n, L, np.int64),
        task_ids=np.arange(n, dtype=np.int64),
    )


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def gemm_gflops(device, n: int = 2048, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def timed(fn, device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def run(args, cfg=None) -> int:
    from models.checkpoint import Checkpoint
    from models.blocks import ModelSpec, init_params
    from metaemb.research.reference_finetune import finetune_embed_loop, finetune_embed_vmap
    from models.finetune import finetune_embed, resolve_device

    device = resolve_device(args.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("bench finetune: --device cuda but CUDA is not available")
        return 2
    cuda = device.startswith("cuda")
    spec = ModelSpec(meta_in=META_IN, other_in=OTHER_IN, meta_hidden=HIDDEN, embedding_dim=EMB,
                     global_hidden=GLOBAL, item_buckets=0)
    ck = Checkpoint(spec=spec, params=init_params(spec, 0), mode="limaml")
    n = args.tasks or (262144 if cuda else 8192)
    batch = make_tasks(n)
    chunks = [int(c) for c in args.chunks.split(",")] if args.chunks else (
        [8192, 32768, 131072] if cuda else [16, 32, 64, 128, 256])
    cores = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, torch.get_num_threads(), cores})
    if cuda:
        threads = [torch.get_num_threads()]
    ref_f, exe_f = flops_per_task()
    name = torch.cuda.get_device_name() if cuda else f"CPU, {cores} cores"
    print(f"bench finetune on {device} ({name}), torch {torch.__version__}")
    if args.train:
        return run_train(spec, device, threads, args.repeats)
    print(f"reference task: {L} samples, k={K}, meta {META_IN}->{HIDDEN}->{EMB}, global "
          f"{OTHER_IN + EMB}->{'->'.join(map(str, GLOBAL))}->1; {ref_f / 1e6:.1f} MFLOP/task as the loop computes it, "
          f"{exe_f / 1e6:.1f} MFLOP/task executed by the batched path")

    # correctness first: the fast path must equal the loop on these very tasks
    few = make_tasks(16, seed=1)
    diff = np.abs(finetune_embed(ck, few, steps=K, lr=0.5, device=device)
                  - finetune_embed_loop(ck, few, steps=K, lr=0.5)).max()
    print(f"max |batched - loop| on 16 tasks: {diff:.2e}")

    # sweep: chunk size x threads, best of `repeats`, GEMM measured in between
    best: dict = {}
    gemm = 0.0
    loop_rate = 0.0
    loop_batch = make_tasks(args.loop_tasks, seed=2)
    vmap_best: dict = {}  # threads -> tasks/s; vmap is interleaved too, so a noisy moment hurts no side alone
    vm = batch.select(slice(0, min(n, 4096)))
    for rep in range(args.repeats):
        for th in threads:
            if not cuda:
                torch.set_num_threads(th)
            gemm = max(gemm, gemm_gflops(device)) if th == max(threads) else gemm
            for cs in chunks:
                if rep == 0:  # warm-up (allocator, kernels) on one chunk
                    finetune_embed(ck, batch.select(slice(0, min(cs, n))), steps=K, lr=0.5, device=device, chunk_size=cs)
                dt = timed(lambda: finetune_embed(ck, batch, steps=K, lr=0.5, device=device, chunk_size=cs), device)
                best[(th, cs)] = max(best.get((th, cs), 0.0), n / dt)
            if not args.no_vmap:
                if rep == 0:
                    finetune_embed_vmap(ck, vm.select(slice(0, 64)), steps=K, lr=0.5, chunk_size=64, device=device)
                dt = timed(lambda: finetune_embed_vmap(ck, vm, steps=K, lr=0.5, chunk_size=1024, device=device), device)
                vmap_best[th] = max(vmap_best.get(th, 0.0), len(vm) / dt)
        if not cuda:
            torch.set_num_threads(max(threads))
        loop_rate = max(loop_rate, args.loop_tasks / timed(
            lambda: finetune_embed_loop(ck, loop_batch, steps=K, lr=0.5), "cpu"))
    if not cuda:
        torch.set_num_threads(max(threads))
    for (th, cs), r in sorted(best.items()):
        print(f"  batched  threads={th:<2} chunk={cs:<6} {r:10.0f} tasks/s")
    (th, cs), rate = max(best.items(), key=lambda kv: kv[1])
    if not cuda:
        torch.set_num_threads(th)
    autograd_rate = 0.0
    for _ in range(args.repeats):
        autograd_rate = max(autograd_rate, n / timed(
            lambda: finetune_embed(ck, batch, steps=K, lr=0.5, device=device, chunk_size=cs, use_kernel=False), device))
    vmap_rate = vmap_best.get(th)  # at the batched path's best thread count
    ceiling = gemm * 1e9 / ref_f
    print()
    print(f"GEMM (fp32 {2048}x{2048}, {max(threads)} threads): {gemm:8.1f} GFLOP/s  -> ceiling {ceiling:,.0f} tasks/s at {ref_f / 1e6:.1f} MFLOP/task")
    print(f"per-task loop (learn2learn-style):  {loop_rate:10,.0f} tasks/s")
    if vmap_rate:
        print(f"torch.func vmap (chunk 1024, {th} thr): {vmap_rate:10,.0f} tasks/s"
              + "".join(f"; {t} thr: {r:,.0f}" for t, r in sorted(vmap_best.items()) if t != th))
    print(f"batched, autograd (chunk {cs}, {th} thr): {autograd_rate:10,.0f} tasks/s")
    print(f"batched fine-tune (chunk {cs}, {th} thr): {rate:10,.0f} tasks/s")
    print(f"  achieved: {rate * ref_f / 1e9:.1f} GFLOP/s loop-equivalent ({100 * rate * ref_f / 1e9 / gemm:.0f}% of GEMM), "
          f"{rate * exe_f / 1e9:.1f} GFLOP/s executed ({100 * rate * exe_f / 1e9 / gemm:.0f}% of GEMM)")
    print(f"  kernel vs the autograd batched path: {rate / autograd_rate:.2f}x")
    print(f"  speed-up vs loop: {rate / loop_rate:.1f}x" + (f"; vs vmap: {rate / vmap_rate:.2f}x" if vmap_rate else ""))
    print(f"  tasks/s as a share of the GEMM ceiling: {100 * rate / ceiling:.0f}%")
    return 0


def run_train(spec, device, threads, repeats: int, tasks: int = 128, n_support: int = 24) -> int:
    """Alg 2a outer step (models.train: the adapted query loss and its backward), tasks/s,
    for the kernel and the autograd inner loop, second- and first-order, 1 and K inner steps."""
    from models import blocks
    from models.blocks import init_params
    from models.data import prepare
    from models.finetune import adapt
    from models.train import split_masks

    b = make_tasks(tasks, seed=3)
    b.n_support = np.full(tasks, n_support)
    t = prepare(b, spec, device)
    sup, qry = split_masks(t)
    params = {k: v.to(device).requires_grad_(True) for k, v in init_params(spec, 0).items()}

    def outer(use_kernel, first_order, steps):
        p = adapt(params, spec, t, sup, steps, 0.5, track=True, first_order=first_order, use_kernel=use_kernel)
        loss = blocks.masked_task_loss(blocks.logits(p, t.x_meta, t.x_other, t.item_ids, spec), t.labels, qry)
        loss.mean().backward()

    configs = [(steps, fo, uk) for steps in (1, K) for fo in (False, True) for uk in (False, True)]
    best: dict = {}
    for th in threads:
        if device == "cpu":
            torch.set_num_threads(th)
        for rep in range(repeats):
            for steps, fo, uk in configs:
                if rep == 0:
                    outer(uk, fo, steps)
                dt = timed(lambda: [outer(uk, fo, steps) for _ in range(3)], device)
                best[(steps, fo, uk)] = max(best.get((steps, fo, uk), 0.0), 3 * tasks / dt)
    print(f"training outer step: {tasks} tasks/batch, {n_support} support + {L - n_support} query samples; "
          f"best of threads {threads}")
    for steps, fo in dict.fromkeys((s, f) for s, f, _ in configs):
        a, k = best[(steps, fo, False)], best[(steps, fo, True)]
        print(f"  inner steps {steps}, {'first' if fo else 'second'}-order: autograd {a:8,.0f}  kernel {k:8,.0f} tasks/s "
              f"({k / a:.2f}x)")
    return 0
