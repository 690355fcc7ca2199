"""SATracker-L: ViT-L/16 (24 stages) + BERT-base (BERT layer j at stage 2j+1; even stages pass text through)."""
from configs import base


ARGS = ()  # get_config takes no argument


def get_config(arg=None):
  del arg
  return base.get_config("large")
