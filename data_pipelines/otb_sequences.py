"""OTB-2015 (OTB-100): the 100 sequences, their object classes and their frame ranges.

Data, not code, taken from the facts pytracking's `otbdataset.py` states (no code copied), so our
scores on raw result files match the ones published with pytracking / OSTrack:
- The 100 names use pytracking's spelling for the multi-target videos: `Human4_2` (the second
  target of Human4, `groundtruth_rect.2.txt`), `Jogging_1`/`_2`, `Skating2_1`/`_2`.
- The annotation of four videos starts after image 1 (BlurCar1 at 247, BlurCar3 at 3, BlurCar4 at
  18, David at 300); every other video starts at image 1. Folders may hold more images than the
  annotation covers (Diving, Football1, Freeman3, Freeman4): frames past the last box are unused.
- Tiger1 is scored without its first 5 frames (pytracking's `initOmit`): its tracker result files
  hold 349 boxes for the 354 annotated frames, so ground-truth rows [5:] are used and tracking
  starts at image 6.
The object class stands in for the sentence (OTB-2015 has no language), as GOT-10k's class does.
"""
from __future__ import annotations

import re

_CLASSES = """
person: Basketball BlurBody Bolt Bolt2 Couple Crossing Crowds Dancer Dancer2 David3 Diving Girl2 Gym
  Human2 Human3 Human4_2 Human5 Human6 Human7 Human8 Human9 Jogging_1 Jogging_2 Jump Singer1 Singer2
  Skater Skater2 Skating1 Skating2_1 Skating2_2 Skiing Subway Walking Walking2 Woman
person head: Biker Football Ironman Matrix Surfer
face: BlurFace Boy David David2 DragonBaby Dudek FaceOcc1 FaceOcc2 FleetFace Football1 Freeman1
  Freeman3 Freeman4 Girl Jumping KiteSurf Man Mhyang Shaking Soccer Trellis
car: BlurCar1 BlurCar2 BlurCar3 BlurCar4 Car1 Car2 Car24 Car4 CarDark CarScale Suv
other: BlurOwl Board Box ClifBar Coke Coupon Doll Fish Lemming Liquor Rubik Sylvester Tiger1 Tiger2
  Toy Trans Twinnings Vase
bird: Bird1 Bird2
mammal: Deer Panda
dog: Dog Dog1
vehicle: MotorRolling RedTeam
bicycle: MountainBike
"""

# First image (1-based) of the annotated range, where it is not 1.
START_FRAME = {"BlurCar1": 247, "BlurCar3": 3, "BlurCar4": 18, "David": 300}
# Leading annotated frames that tracker results omit (pytracking's initOmit).
INIT_OMIT = {"Tiger1": 5}


def _parse_classes() -> dict[str, str]:
  classes, current = {}, None
  for line in _CLASSES.strip().splitlines():
    if ":" in line:
      current, _, line = line.partition(":")
      current = current.strip()
    for name in line.split():
      classes[name] = current
  return classes


OBJECT_CLASS = _parse_classes()
SEQUENCES = tuple(sorted(OBJECT_CLASS, key=str.lower))
assert len(SEQUENCES) == 100, len(SEQUENCES)


def video_and_target(name: str) -> tuple[str, str]:
  """('Jogging', '1') for 'Jogging_1' (the video folder and its groundtruth_rect.<k>.txt), and
  (name, '') for single-target sequences."""
  m = re.fullmatch(r"(.+)_(\d)", name)
  return (m.group(1), m.group(2)) if m else (name, "")


def annotation_names(name: str) -> list[str]:
  """Spellings of a sequence's file in annotation packs and result folders: pytracking's
  `Jogging_1` first, then the OTB toolkit's / pysot's `Jogging-1` and `Jogging.1`."""
  video, target = video_and_target(name)
  if not target:
    return [name]
  return [name, f"{video}-{target}", f"{video}.{target}"]
