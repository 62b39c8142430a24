"""The COCO-80 label space every detector backend maps into (0-based, darknet order).

Names are the official COCO 2017 category names; ``SUPERCATEGORY`` is the official COCO
supercategory of each class (part of the category list published with the annotations).
"""

from __future__ import annotations

#: (name, supercategory) in the 0-based order of darknet's coco.names / YOLO heads
_CLASSES: tuple[tuple[str, str], ...] = (
    ("person", "person"),
    ("bicycle", "vehicle"), ("car", "vehicle"), ("motorcycle", "vehicle"),
    ("airplane", "vehicle"), ("bus", "vehicle"), ("train", "vehicle"), ("truck", "vehicle"),
    ("boat", "vehicle"),
    ("traffic light", "outdoor"), ("fire hydrant", "outdoor"), ("stop sign", "outdoor"),
    ("parking meter", "outdoor"), ("bench", "outdoor"),
    ("bird", "animal"), ("cat", "animal"), ("dog", "animal"), ("horse", "animal"),
    ("sheep", "animal"), ("cow", "animal"), ("elephant", "animal"), ("bear", "animal"),
    ("zebra", "animal"), ("giraffe", "animal"),
    ("backpack", "accessory"), ("umbrella", "accessory"), ("handbag", "accessory"),
    ("tie", "accessory"), ("suitcase", "accessory"),
    ("frisbee", "sports"), ("skis", "sports"), ("snowboard", "sports"),
    ("sports ball", "sports"), ("kite", "sports"), ("baseball bat", "sports"),
    ("baseball glove", "sports"), ("skateboard", "sports"), ("surfboard", "sports"),
    ("tennis racket", "sports"),
    ("bottle", "kitchen"), ("wine glass", "kitchen"), ("cup", "kitchen"), ("fork", "kitchen"),
    ("knife", "kitchen"), ("spoon", "kitchen"), ("bowl", "kitchen"),
    ("banana", "food"), ("apple", "food"), ("sandwich", "food"), ("orange", "food"),
    ("broccoli", "food"), ("carrot", "food"), ("hot dog", "food"), ("pizza", "food"),
    ("donut", "food"), ("cake", "food"),
    ("chair", "furniture"), ("couch", "furniture"), ("potted plant", "furniture"),
    ("bed", "furniture"), ("dining table", "furniture"), ("toilet", "furniture"),
    ("tv", "electronic"), ("laptop", "electronic"), ("mouse", "electronic"),
    ("remote", "electronic"), ("keyboard", "electronic"), ("cell phone", "electronic"),
    ("microwave", "appliance"), ("oven", "appliance"), ("toaster", "appliance"),
    ("sink", "appliance"), ("refrigerator", "appliance"),
    ("book", "indoor"), ("clock", "indoor"), ("vase", "indoor"), ("scissors", "indoor"),
    ("teddy bear", "indoor"), ("hair drier", "indoor"), ("toothbrush", "indoor"),
)

COCO_CLASSES: tuple[str, ...] = tuple(name for name, _ in _CLASSES)
NUM_CLASSES = len(COCO_CLASSES)
SUPERCATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(sup for _, sup in _CLASSES))
#: class index -> supercategory index
SUPERCATEGORY: tuple[int, ...] = tuple(SUPERCATEGORIES.index(sup) for _, sup in _CLASSES)
NUM_SUPERCATEGORIES = len(SUPERCATEGORIES)

#: darknet's coco.names spells a few classes the VOC way
DARKNET_ALIASES = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
}

assert NUM_CLASSES == 80 and NUM_SUPERCATEGORIES == 12


def class_index(name: str) -> int:
    """0-based COCO-80 index of a class name (official or darknet spelling)."""
    return COCO_CLASSES.index(DARKNET_ALIASES.get(name, name))
