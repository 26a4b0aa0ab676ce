"""Task generators and their exact checks: text-to-image, editing, VQA/descriptions and think plans."""
