import sys

from keras_explr.cli import main

sys.exit(main())
