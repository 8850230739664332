"""The paper's training settings, importable without TensorFlow."""

#: Training (Section 4 of the paper).
TRAIN_DEFAULTS = {"epochs": 100, "batch_size": 64, "learning_rate": 0.1}
#: HSC fine-tuning (Section 6 of the paper).
FINETUNE_DEFAULTS = {"epochs": 30, "batch_size": 16, "learning_rate": 0.005}
