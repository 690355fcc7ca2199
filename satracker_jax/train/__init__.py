"""Training: sharded train state, jitted step, Orbax checkpoints, metrics (the verb that runs it:
`satracker_jax/cli/train.py`).

  sharding.py        mesh from `config.train.mesh`, fsdp parameter rule, global batches, multi-host init
  optimizer.py       AdamW + warmup/cosine|step schedule + per-parameter lr multipliers (regex rules)
  state.py           the train state pytree, its sharded creation, the jitted train step
  checkpoint.py      Orbax CheckpointManager (state / config / data position) for training
                     (inference reads checkpoints through `satracker_jax.model_io`)
  metrics_writer.py  metrics.jsonl + TensorBoard event files (no TensorFlow) + console lines (process 0)
  loop.py            `train(config, workdir)`: resume, data, step loop, preemption, NaN policy
"""
