"""Reports read finished or running runs (`dist-train plot`, `dist-train summary`); trackers (dist_train.tracking)
write them. Reports never write into a run_dir."""
