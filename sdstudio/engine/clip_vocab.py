"""Token ids of the CLIP BPE vocabulary (Radford et al. 2021) that the engine names, free of torch and
transformers so that the model-family table (and through it the UI) can use them."""

VOCAB_SIZE = 49408
BOS = 49406
EOS = 49407
OPENCLIP_PAD = 0  # `open_clip.tokenize` pads with token 0; OpenAI CLIP and transformers pad with EOS
COMMA = 267  # ",</w>": A1111 prefers to split long prompts after a comma
