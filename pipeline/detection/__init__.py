"""The slump stage's detection: loss clusters (candidates) and their physical evidence, the
reference rules, the evidence classifier and the drained-lake veto, the Mask R-CNN (chips,
model, inference, training) and mask-to-polygon conversion."""
