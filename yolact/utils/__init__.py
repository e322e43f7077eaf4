"""Small helpers every stage uses: console start-up and one-line errors, atomic
writes, drawing, image and video io."""
