"""One home for the strings every stage agrees on: special tokens, tensor I/O names, manifest keys."""

# Special tokens added to the backbone's tokenizer.
TS_TOKEN = "<ts>"  # marks where a series' media is inserted (Flamingo) or spliced (SoftPrompt)
END_CHUNK_TOKEN = "<endofchunk>"  # closes a series' chunk of text
SPECIAL_TOKENS = (TS_TOKEN, END_CHUNK_TOKEN)

# The answer line every generation ends with; parsed by prompts.parse_answer.
ANSWER_PREFIX = "Answer:"

# Artifact files.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "adapter.safetensors"
MANIFEST_FILE = "manifest.json"
TOKENIZER_DIR = "tokenizer"

# Manifest keys.
MANIFEST_FORMAT = "format"
MANIFEST_BACKBONE = "backbone"
MANIFEST_FILES = "files"
MANIFEST_SHA256 = "sha256"
MANIFEST_SIZE_BYTES = "size_bytes"
MANIFEST_PARAMS = "parameters"
MANIFEST_TRANSFORMS = "transforms"
MANIFEST_METRICS = "metrics"

# ONNX tensor I/O names (encoder + resampler graph).
ONNX_SERIES = "series"  # (B, L) float32, z-normalised
ONNX_SERIES_MASK = "series_mask"  # (B, L) bool, True where a sample is real
ONNX_SERIES_INDEX = "series_index"  # (B,) int64, position of the series within its sample
ONNX_SERIES_VECTORS = "series_vectors"  # (B, F) float32, each series' rhythm vector (encoder.rhythm_vector only)
ONNX_LATENTS = "latents"  # (B, num_latents, dim)

# Floor for a channel's standard deviation when z-normalising a flat line.
STD_EPS = 1e-6

# A chat model that opens a new turn has finished its answer: generation stops there too (ChatML's turn start;
# SmolLM2 sometimes emits it instead of <|im_end|> after "Answer: <label>").
TURN_START_TOKEN = "<|im_start|>"
