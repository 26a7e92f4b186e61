"""Building the policy: loaders for the bundled SmolLM2 GGUF, hub ids, local folders and tiny random models
(`loaders`), LoRA adapters (`lora`), each group's prompt computed once in rollouts and updates
(`prefix_sharing`), and the frozen reference model of the KL term (`reference`)."""
