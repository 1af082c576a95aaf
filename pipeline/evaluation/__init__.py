"""Evaluation against the generated scenes' truth: detectors scored side by side, per scene
family, with the naive baseline; fitting the evidence classifier family by family."""
