"""``python -m mnist_cnn`` (also what ``torchrun -m mnist_cnn`` runs)."""

from mnist_cnn.cli import main

if __name__ == "__main__":
    main()
