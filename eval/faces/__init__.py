"""The face core: detect -> align -> identity embeddings -> head pose -> expression, offline.

    from eval.faces import FaceAnalyzer
    results = FaceAnalyzer(recognizers=("sface", "dlib")).analyze(["a.jpg", "b.png"])
"""
from eval.faces.align import ARCFACE_TEMPLATE, align_face, similarity_transform
from eval.faces.analyzer import FaceAnalyzer
from eval.faces.images import MAX_PIXELS, load_image
from eval.faces.pose import estimate_pose
from eval.faces.recognizers import RECOGNIZERS, default_threshold, similarity
from eval.faces.types import EXPRESSION_LABELS, Expression, Face, FaceInputError, ImageAnalysis, Pose

__all__ = [
    "ARCFACE_TEMPLATE", "EXPRESSION_LABELS", "Expression", "Face", "FaceAnalyzer", "FaceInputError",
    "ImageAnalysis", "MAX_PIXELS", "Pose", "RECOGNIZERS", "align_face", "default_threshold",
    "estimate_pose", "load_image", "similarity", "similarity_transform",
]
