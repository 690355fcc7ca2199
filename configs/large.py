"""SATracker-L: ViT-L/16 (24 stages) + BERT-base (each BERT layer serves two stages)."""
from configs import base


def get_config(arg=None):
  del arg
  return base.get_config("large")
