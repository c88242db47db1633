"""The one scoring path: tokenize a micro-batch, run ONNX Runtime per length bucket, calibrate.

Used by the stream, the CLI and the benchmarks. Imports only numpy, tokenizers and onnxruntime (never
torch), so a worker starts fast and small.

Example:
    >>> scorer = BatchScorer.load(DEFAULT_MODEL_DIR)                    # doctest: +SKIP
    >>> scorer.score(["$AAPL beats estimates, shares jump"]).labels     # doctest: +SKIP
    ['bullish']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finpulse.models.artifact import CPU_ONNX, GPU_ONNX, ModelMetadata, read_metadata
from finpulse.models.calibration import softmax
from finpulse.models.exceptions import ArtifactError
from finpulse.models.labels import BEARISH, BULLISH, LABELS, NEUTRAL
from finpulse.models.tokenization import bucketed_batches, load_tokenizer

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

logger = logging.getLogger("finpulse.models")

CPU_BUCKET_SIZE = 64
GPU_BUCKET_SIZE = 512
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True)
class Scores:
    """Calibrated class probabilities of a batch of texts, in the order the texts came in."""

    p_bearish: np.ndarray  # float32 (n,)
    p_neutral: np.ndarray
    p_bullish: np.ndarray
    labels: list[str]  # argmax label per text
    confidence: np.ndarray  # calibrated probability of the argmax label

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray) -> Scores:
        """``probabilities`` (n, 3) in :data:`LABELS` order."""
        probabilities = np.asarray(probabilities, dtype=np.float32).reshape(-1, len(LABELS))
        winners = probabilities.argmax(axis=1)
        return cls(
            p_bearish=probabilities[:, BEARISH].copy(),
            p_neutral=probabilities[:, NEUTRAL].copy(),
            p_bullish=probabilities[:, BULLISH].copy(),
            labels=[LABELS[i] for i in winners],
            confidence=probabilities[np.arange(len(winners)), winners].copy(),
        )

    def probabilities(self) -> np.ndarray:
        """(n, 3) in :data:`LABELS` order (bearish, bullish, neutral)."""
        return np.stack([self.p_bearish, self.p_bullish, self.p_neutral], axis=1)


class BatchScorer:
    """An ONNX Runtime session over one model folder, scoring whole micro-batches."""

    def __init__(
        self,
        *,
        session: onnxruntime.InferenceSession,
        tokenizer: Tokenizer,
        metadata: ModelMetadata,
        model_dir: Path,
        bucket_size: int,
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._input_names = {i.name for i in session.get_inputs()}
        self._output_name = session.get_outputs()[0].name
        self.metadata = metadata
        self.version: str = metadata.version
        self.temperature: float = metadata.temperature
        self.model_dir = model_dir
        self.bucket_size = bucket_size
        self.providers: list[str] = session.get_providers()
        self.on_gpu: bool = self.providers[0] in GPU_PROVIDERS

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        max_length: int | None = None,
        threads: int | None = None,
        prefer_gpu: bool = True,
        bucket_size: int | None = None,
        tensorrt: bool = False,
    ) -> BatchScorer:
        """Open a model folder: the fp16 GPU artifact when onnxruntime-gpu sees a GPU, else the int8 CPU one.

        ``max_length`` caps tokens per text (default: the model's), ``threads`` the CPU threads of one
        session run (default: onnxruntime's choice). ``tensorrt`` tries TensorRT before CUDA: it builds an
        engine per new input shape, which pays off only for long-running workers with few bucket shapes.
        """
        import onnxruntime as ort

        model_dir = Path(model_dir)
        metadata = read_metadata(model_dir)
        length = min(max_length or metadata.max_length, metadata.max_length)
        tokenizer = load_tokenizer(model_dir, length)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        gpu_providers = [*(["TensorrtExecutionProvider"] if tensorrt else []), "CUDAExecutionProvider"]
        session = _gpu_session(ort, model_dir, options, gpu_providers) if prefer_gpu else None
        if session is None:
            cpu_path = model_dir / CPU_ONNX
            if not cpu_path.is_file():
                raise ArtifactError(f"{model_dir}: no {CPU_ONNX}")
            session = ort.InferenceSession(str(cpu_path), options, providers=["CPUExecutionProvider"])
            logger.info("model %s: %s on CPUExecutionProvider", metadata.version, CPU_ONNX)
        on_gpu = session.get_providers()[0] in GPU_PROVIDERS
        size = bucket_size or (GPU_BUCKET_SIZE if on_gpu else CPU_BUCKET_SIZE)
        return cls(session=session, tokenizer=tokenizer, metadata=metadata, model_dir=model_dir, bucket_size=size)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Uncalibrated logits (n, 3) in input order; one session run per length bucket."""
        logits = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        if not texts:
            return logits
        for batch in bucketed_batches(self._tokenizer, texts, self.bucket_size):
            feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(batch.input_ids)
            logits[batch.indices] = self._run(feeds)
        return logits

    def score(self, texts: Sequence[str]) -> Scores:
        """Calibrated probabilities, labels and confidences of a whole micro-batch, in input order."""
        return Scores.from_probabilities(softmax(self.logits(texts), self.temperature))

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if not self.on_gpu:
            return self._session.run([self._output_name], feeds)[0]
        # IO binding: inputs copied once to the device, output fetched once, no per-run allocation dance.
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        binding.bind_output(self._output_name, "cuda")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32)


def _gpu_session(
    ort: object, model_dir: Path, options: object, wanted: list[str]
) -> onnxruntime.InferenceSession | None:
    gpu_path = model_dir / GPU_ONNX
    available = [p for p in wanted if p in ort.get_available_providers()]  # type: ignore[attr-defined]
    if not available:
        logger.debug("no GPU execution provider in this onnxruntime build: using the CPU artifact")
        return None
    if not gpu_path.is_file():
        logger.info("GPU execution provider available but %s has no %s: using the CPU artifact", model_dir, GPU_ONNX)
        return None
    # TensorRT is listed whenever onnxruntime-gpu is built with it, even without TensorRT libraries:
    # try the providers from best to plainest and keep the first session that opens on a GPU.
    for start in range(len(available)):
        providers = [*available[start:], "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(str(gpu_path), options, providers=providers)  # type: ignore[attr-defined]
        except Exception as err:  # noqa: BLE001 - any provider failure means: try the next one
            logger.warning("could not open %s with %s: %s", GPU_ONNX, providers[0], err)
            continue
        if session.get_providers()[0] in GPU_PROVIDERS:
            logger.info("model on %s: %s", session.get_providers()[0], gpu_path)
            return session
    logger.warning("no GPU session could be opened: using the CPU artifact")
    return None
