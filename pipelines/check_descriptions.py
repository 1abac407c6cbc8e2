"""What each asset check verifies, in the words the UI shows beside it (one place for all of them)."""

CHECK_DESCRIPTIONS = {
    # cleaned_audio
    "audio_finite": "The cleaned 16 kHz waveform holds no NaN or Inf samples.",
    # audio_features
    "features_finite": "The Wav2Vec2 features hold no NaN or Inf values.",
    "audio_motion_length": "Audio and motion last the same time, within 2 frames (a warning beyond that).",
    "components_consistent": "NPHM, FLAME (when tracked) and audio frame counts agree; "
    "training_segments leaves out a sequence that fails.",
    # nphm_expressions
    "expression_finite": "The NPHM expression codes hold no NaN or Inf values.",
    "expression_dim": "Each frame's NPHM expression code has 200 values.",
    # flame_vertices
    "vertices_finite": "The FLAME vertices hold no NaN or Inf values.",
    "vertex_dim": "Every FLAME frame has as many vertices as the template.",
    # nphm_meshes
    "mesh_vertices_finite": "The NPHM meshes' vertices hold no NaN or Inf values.",
    # training_segments
    "segments_finite": "A sample of segments holds no NaN or Inf in motion or audio features.",
    "segments_dimensions": "Segments have the configured length; expression codes have 200 values.",
    "segments_splits": "The train split has segments (an error without); val and test too (a warning without).",
    # evaluation_metrics
    "model_beats_audio_free_baseline": "On the test identities, the model's mouth error (NPHM) / lip vertex error "
    "(FLAME) is below the same network sampled without audio: it uses the audio. Blocking.",
}


def describe_check(name: str) -> str:
    """The description of check `name`; every declared check must have one (the UI shows it)."""
    try:
        return CHECK_DESCRIPTIONS[name]
    except KeyError:
        raise KeyError(f"asset check {name!r} has no description in pipelines/check_descriptions.py") from None
