from setuptools import find_packages, setup

setup(
    name="keras_explr",
    version="0.1.0",
    description="Li & Arora's exponential learning-rate schedules (ExpLR, TEXP) for Keras 3, exact inside model.fit",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_explr", "keras_explr.*"]),
    python_requires=">=3.10",
    install_requires=["keras>=3.10", "numpy>=1.26"],
    extras_require={
        "tensorflow": ["tensorflow>=2.16"],
        "tensorflow-cpu": ["tensorflow-cpu>=2.16"],
        "jax": ["jax>=0.4.30"],
        "torch": ["torch>=2.2"],
        "demo": ["scikit-learn>=1.3", "matplotlib>=3.7"],
        "tuner": ["keras-tuner>=1.4", "tensorboard>=2.16", "six", "grpcio"],  # grpcio: chief/worker mode
        "test": ["pytest>=8", "hypothesis>=6", "scikit-learn>=1.3", "matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["keras-explr=keras_explr.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
