"""The strategy equivalence matrix: which runs the session fixture `equivalence_runs` launches."""

# fp32, a fixed seed, 10 steps of the generated regression. SGD, not Adam: Adam's update is nearly invariant to the
# gradient's scale, so it would hide a wrong accumulation scale or a wrong clipping factor; with SGD and a learning
# rate that moves the loss every step, such a mistake shows in the losses within the 10 steps.
# Parameter groups ride along in every run: weight decay on the weights (biases excluded by optimizer.no_decay) and
# the output layer at half the learning rate, so a strategy that grouped differently would show in its losses.
PARAM_GROUPS = ["optimizer.weight_decay=0.05", "optimizer.param_groups=[{match: '^2\\.', lr_scale: 0.5}]"]
COMMON = [
    "train.max_steps=10", "train.batch_size=16", "train.log_every=1", "train.eval_every=1000",
    "optimizer.name=sgd", "optimizer.momentum=0.9", "optimizer.lr=0.1", *PARAM_GROUPS,
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
    "ddp_ac": ("accum2_clip", ["strategy=ddp", "train.activation_checkpointing=1"]),
    "zero3_ac": ("accum2_clip", ["strategy=deepspeed", "deepspeed.zero_stage=3", "train.activation_checkpointing=1"]),
}

# The BatchNorm model (tests/strategies/batchnorm_recipe.py) under each strategy, 6 steps, eval at the end and a
# checkpoint to export: buffers across ranks, logged vs exported eval, bf16, train.sync_batchnorm.
BATCHNORM_RECIPE = "recipe=tests/strategies/batchnorm_recipe.py:BatchNormRegression"
BATCHNORM_COMMON = ["train.max_steps=6", "train.eval_every=6", "checkpoint.resume=never", "optimizer.param_groups=[]"]
BATCHNORM = {
    "ddp": ["strategy=ddp"],
    "fsdp": ["strategy=fsdp"],
    "zero1": ["strategy=deepspeed", "deepspeed.zero_stage=1"],
    "zero3": ["strategy=deepspeed", "deepspeed.zero_stage=3"],
    "fsdp_bf16": ["strategy=fsdp", "train.precision=bf16"],
    "zero1_bf16": ["strategy=deepspeed", "deepspeed.zero_stage=1", "train.precision=bf16"],
    "zero2_bf16": ["strategy=deepspeed", "deepspeed.zero_stage=2", "train.precision=bf16"],
    "zero3_bf16": ["strategy=deepspeed", "deepspeed.zero_stage=3", "train.precision=bf16"],
    "ddp_sync": ["strategy=ddp", "train.sync_batchnorm=true"],
    "fsdp_sync": ["strategy=fsdp", "train.sync_batchnorm=true"],
    "fsdp_ema": ["strategy=fsdp", "train.ema=0.5"],  # the EMA of the statistics too: eval and export agree
    "zero1_ema": ["strategy=deepspeed", "deepspeed.zero_stage=1", "train.ema=0.5"],
}

# The EMA of the weights (decay 0.5, so it moves) under ddp and the sharded strategies, evaluated mid-run and at the
# end: the shadow of each rank's own shards must give ddp's EMA values, evaluation and exported weights.
EMA_COMMON = ["train.ema=0.5", "train.eval_every=5", "checkpoint.resume=never"]
EMA = {"ddp": ["strategy=ddp"], "fsdp": ["strategy=fsdp"],
       "zero3": ["strategy=deepspeed", "deepspeed.zero_stage=3"]}

# The tiny gpt on 4 processes: every mesh the fsdp strategy builds against ddp. The global batch is 8 everywhere
# (batch_size x data-parallel ranks), so every run sees the same samples in each step. `tp2x2` (tensor 2 x FSDP 2)
# checkpoints at step 2; the resume_* runs continue from it on other meshes and must match ddp's steps 3-4.
# Tied embeddings (re-tied after tensor parallelism splits them), a parameter group and an EMA of the weights (what
# the eval uses; resharded with the model on resume) ride along in every run.
MESH_COMMON = [
    "train.max_steps=4", "train.log_every=1", "train.eval_every=4", "sample.length=8",
    "optimizer.name=sgd", "optimizer.lr=0.5", "optimizer.momentum=0.9", "optimizer.weight_decay=0.1",
    "scheduler.name=constant", "scheduler.warmup_steps=0",
    "model.layers=2", "model.dim=32", "model.heads=4", "model.seq_len=16", "model.tie_embeddings=true", "train.ema=0.5",
    "optimizer.param_groups=[{match: '\\.ffn\\.', lr_scale: 0.5}]",
]
MESH_CHECKPOINT = "tp2x2/checkpoints/step_2"
MESH = {  # name -> overrides
    "ddp": ["strategy=ddp", "train.batch_size=2"],
    "hsdp": ["strategy=fsdp", "fsdp.replicate=2", "train.batch_size=2", "train.activation_checkpointing=2"],
    "tp2x2": ["strategy=fsdp", "parallel.tensor=2", "train.batch_size=4", "train.activation_checkpointing=1",
              "checkpoint.every=2", "checkpoint.keep=null"],
    "tp4x1": ["strategy=fsdp", "parallel.tensor=4", "train.batch_size=8"],
}
MESH_RESUME = {  # name -> overrides; checkpoint.resume is added by the fixture
    "resume_tp4x1": ["strategy=fsdp", "parallel.tensor=4", "train.batch_size=8"],
    "resume_fsdp1x4": ["strategy=fsdp", "train.batch_size=2"],
}
