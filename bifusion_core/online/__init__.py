"""Online (streaming) scene segmentation: a scan's frames one at a time, merged into one scene.

``stream`` yields a scan's prepared MV frames in recording order, ``point_map`` keeps the
accumulated points (one per voxel), ``merge`` the scene's instance memory, ``cues`` the merge
embedding and world box of each frame instance, ``segmenter`` runs the loop, ``mesh_map`` carries
the result onto the reconstructed mesh, and ``infer`` / ``evaluate`` are the two entry points.
"""
