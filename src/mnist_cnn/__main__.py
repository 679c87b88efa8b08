"""``python -m mnist_cnn`` (also what ``torchrun -m mnist_cnn`` runs)."""

from .cli import main

if __name__ == "__main__":
    main()
