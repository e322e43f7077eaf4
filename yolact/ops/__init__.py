"""Pure tensor functions (keras.ops), usable by the model, the loss and tf.data."""
