"""Raw RGB-D input as recorded: ScanNet scans (``.sens`` streams, SensReader exports, mesh, annotations, split lists) and plain
recordings, behind one ``FrameSource``."""
