"""Segmentation training (task == "segmentation"): data, loss, metrics, the job."""
