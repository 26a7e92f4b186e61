"""The trained policy as an MLflow model (logger.log_final_model=true): MLflow runs this file when it loads the model
("models from code", hicra/tracking/model_logging.py), so it imports only mlflow and transformers.

`mlflow.pyfunc.load_model("models:/<id>").predict(["What is 2 + 3?"])` answers each question with the policy's greedy
reply under its chat template, as the training run's validation decodes it.
"""

import mlflow
from mlflow.models import set_model


class HicraPolicy(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["final_model"])
        self.model = AutoModelForCausalLM.from_pretrained(context.artifacts["final_model"]).eval()

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[str]:
        import torch

        max_new_tokens = int((params or {}).get("max_new_tokens", 256))
        replies = []
        for question in model_input:
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
            with torch.no_grad():
                out = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
            replies.append(self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return replies


set_model(HicraPolicy())
