"""Writers of the files a data kind reads when the spec gives no `data.path`: seeded synthetic
generators (hyperspectral, clips, keypoints, segmentation) and the bundled datasets
(scikit-learn's digits, MNIST-1D), each in the layout its kind reads from a user's file.
Each is a pure function of its settings; `data.h5.cache` writes it once per settings.
"""
