import pytest

from eval.faces import FaceAnalyzer


@pytest.fixture(scope="session")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(recognizers=("sface", "dlib"))


@pytest.fixture(scope="session")
def bundled(analyzer, faces_dir):
    """Every bundled photo analysed once: {stem: ImageAnalysis}."""
    paths = sorted(faces_dir.glob("*.jpg"))
    return {path.stem: result for path, result in zip(paths, analyzer.analyze(paths))}
