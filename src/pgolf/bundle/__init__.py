"""pgolf.bundle: the self-contained train_gpt.py a submission ships, and its size (the code bytes)."""
