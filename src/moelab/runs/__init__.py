"""A run folder: its files, their format, and the record every consumer reads.

    config.toml        the resolved config
    resume.safetensors a mid-run checkpoint while training (moelab/checkpoint.py)
    model.safetensors  the trained weights
    training.json      the training result: with the weights, a complete checkpoint
    metrics.json       everything measured (`folder.Metrics`); a folder with a valid metrics.json
                       is a finished run
    quantization.json  `moelab quantize`'s measurements (quantization-gG.json per group size G)

`folder` reads and writes the record without torch (the sweep store, reports and the probe use
it); `weights` saves, loads and resumes the weights and rebuilds a run's model (torch).
"""
