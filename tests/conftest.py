"""Shared test set-up: quiet Caffe's glog output (glog reads this when libcaffe loads)."""
import os

os.environ.setdefault("GLOG_minloglevel", "2")
