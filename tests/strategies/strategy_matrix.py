"""The strategy equivalence matrix: which runs the session fixture `equivalence_runs` launches."""

# fp32, a fixed seed, 10 steps of the generated regression. SGD, not Adam: Adam's update is nearly invariant to the
# gradient's scale, so it would hide a wrong accumulation scale or a wrong clipping factor; with SGD and a learning
# rate that moves the loss every step, such a mistake shows in the losses within the 10 steps.
COMMON = [
    "train.max_steps=10", "train.batch_size=16", "train.log_every=1", "train.eval_every=1000",
    "optimizer.name=sgd", "optimizer.momentum=0.9", "optimizer.lr=0.1",
    "scheduler.name=constant", "scheduler.warmup_steps=0",
    "dataset.n_train=2048", "dataset.n_eval=64", "model.hidden=32",
]
STRATEGIES = {
    "ddp": ["strategy=ddp"],
    "fsdp": ["strategy=fsdp"],
    "zero1": ["strategy=deepspeed", "deepspeed.zero_stage=1"],
    "zero2": ["strategy=deepspeed", "deepspeed.zero_stage=2"],
    "zero3": ["strategy=deepspeed", "deepspeed.zero_stage=3"],
}
CLIP = 0.05  # well under the ~1.0 gradient norm of these steps: every step clips
VARIANTS = {
    "plain": [],
    "accum2_clip": ["train.grad_accum=2", f"train.clip_grad_norm={CLIP}"],
}
EXTRA = {  # name -> (variant whose ddp run it must match, overrides)
    "fsdp_ac_compile": ("accum2_clip", ["strategy=fsdp", "train.activation_checkpointing=1", "train.compile=true"]),
    "ddp_compile": ("plain", ["strategy=ddp", "train.compile=true"]),
    "zero2_offload": ("accum2_clip",
                      ["strategy=deepspeed", "deepspeed.zero_stage=2", "deepspeed.offload_optimizer=true"]),
}
